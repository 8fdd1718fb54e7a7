package cli

import (
	"context"
	"errors"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/postrotate/postrotate/executor/proctest"
	"github.com/postrotate/postrotate/messages/envelope"
	"github.com/postrotate/postrotate/worker"
	"github.com/postrotate/postrotate/worker/natsconn"
	"github.com/postrotate/postrotate/worker/workertest"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

const serveInventory = `version: 1
records:
  - {uid: cfg, type: pamConfiguration, gateway: gw}
  - {uid: m1, type: pamMachine, worker: m1, scripts: [{file: ok.sh}]}
  - uid: u
    type: pamUser
    fields: [{type: login, value: u}, {type: password, value: p}]
    rotation: {type: scripts_only, resource: m1, configuration: cfg}
    scripts: [{file: ok.sh}]
`

// served is a `postrotate serve` running in this process.
type served struct {
	url, natsURL, token string
	logs                *proctest.Buffer
	stop                func() int // ends serve (as a signal would) and returns its exit status
}

// startServe runs `postrotate serve` on free loopback ports, with the data
// directory data and an API token file it creates, until stop.
func startServe(t *testing.T, data string, extra ...string) *served {
	t.Helper()
	return startServeOn(t, data, freeAddr(t), freeAddr(t), extra...)
}

// startServeOn is startServe on the given HTTP and NATS addresses.
func startServeOn(t *testing.T, data, httpAddr, natsAddr string, extra ...string) *served {
	t.Helper()
	inv := writeInventory(t, serveInventory, map[string]string{"ok.sh": "echo ok $POSTROTATE_STEP\n"})
	sv := &served{url: "http://" + httpAddr, natsURL: "nats://" + natsAddr, token: filepath.Join(data, "api.token"), logs: &proctest.Buffer{}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	args := append([]string{"serve", "-i", inv, "--data", data, "--http", httpAddr, "--nats-listen", natsAddr,
		"--api-token-file", sv.token, "--no-schedules", "--log-level", "debug"}, extra...)
	go func() { done <- mainContext(ctx, args, sv.logs, sv.logs) }()
	var once sync.Once
	code := 0
	sv.stop = func() int {
		once.Do(func() {
			cancel()
			select {
			case code = <-done:
			case <-time.After(30 * time.Second):
				t.Errorf("serve did not stop\n%s", sv.logs.String())
			}
		})
		return code
	}
	t.Cleanup(func() { sv.stop() })
	// Up when /healthz answers 200 (serve announces it nowhere else).
	workertest.Eventually(t, 30*time.Second, "serve up", func() bool {
		select {
		case code := <-done:
			t.Fatalf("serve exited %d\n%s", code, sv.logs.String())
		default:
		}
		resp, err := http.Get(sv.url + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return sv
}

// startCredsWorker runs a worker as postrotate-worker --creds does: its
// nkey user, its inbox prefix, the trust of its credentials.
func startCredsWorker(t *testing.T, path string) {
	t.Helper()
	c, err := envelope.ReadCredentials(path)
	if err != nil {
		t.Fatal(err)
	}
	opts, err := natsconn.Options(natsconn.Config{Host: c.Host, Creds: &c})
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(c.NATS, opts...)
	if err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	trust, err := c.Trust()
	if err != nil {
		t.Fatal(err)
	}
	w, err := worker.New(js, worker.Options{Host: c.Host, Name: c.Host + "-creds", FetchWait: 500 * time.Millisecond, Trust: trust})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close) // after the worker stopped
	workertest.Start(t, w, 0)
}

// serve with its defaults: the embedded NATS admits only enrolled workers,
// which `worker add` enrolls; a rotation runs on workers connected with
// their credentials.
func TestServeEnrolledWorkers(t *testing.T) {
	t.Parallel()
	data := t.TempDir()
	sv := startServe(t, data)
	if nc, err := nats.Connect(sv.natsURL); err == nil {
		nc.Close()
		t.Fatal("the embedded NATS admitted a client without credentials")
	} else if !errors.Is(err, nats.ErrAuthorization) {
		t.Fatalf("anonymous client: %v", err)
	}
	if code, _, stderr := run(t, "rotate", "--server", sv.url, "--user", "u"); code != ExitFailed || !strings.Contains(stderr, "401") {
		t.Fatalf("rotate without the token: exit %d\n%s", code, stderr)
	}
	dir := t.TempDir()
	for _, h := range []string{"gw", "m1"} {
		out := filepath.Join(dir, h+".creds")
		if code, _, stderr := run(t, "worker", "add", h, "--server", sv.url, "--api-token-file", sv.token, "--out", out); code != ExitOK {
			t.Fatalf("worker add %s: exit %d\n%s", h, code, stderr)
		}
		c, err := envelope.ReadCredentials(out)
		if err != nil {
			t.Fatal(err)
		}
		if c.NATS != sv.natsURL {
			t.Fatalf("credentials name NATS %q, serve listens on %s", c.NATS, sv.natsURL)
		}
		startCredsWorker(t, out)
	}
	code, stdout, stderr := run(t, "rotate", "--server", sv.url, "--user", "u", "--wait", "--api-token-file", sv.token)
	if code != ExitOK || !strings.Contains(stdout, "2 of 2 steps succeeded") {
		t.Fatalf("rotate: exit %d\n%s%s\nserve:\n%s", code, stdout, stderr, sv.logs.String())
	}
	if code := sv.stop(); code != ExitOK {
		t.Fatalf("serve exited %d\n%s", code, sv.logs.String())
	}
	if strings.Contains(sv.logs.String(), "nats permission violation") {
		t.Fatalf("serve logged a permission violation:\n%s", sv.logs.String())
	}
	// Restarted, serve admits the enrolled workers again: they reconnect
	// and run the next rotation.
	sv = startServeOn(t, data, strings.TrimPrefix(sv.url, "http://"), strings.TrimPrefix(sv.natsURL, "nats://"), "--pinned-ttl", "1s")
	code, stdout, stderr = run(t, "rotate", "--server", sv.url, "--user", "u", "--wait", "--api-token-file", sv.token)
	if code != ExitOK || !strings.Contains(stdout, "2 of 2 steps succeeded") {
		t.Fatalf("rotate after a restart: exit %d\n%s%s\nserve:\n%s", code, stdout, stderr, sv.logs.String())
	}
}

// serve --local-workers gives its in-process workers identities of their
// own, kept across restarts.
func TestServeLocalWorkers(t *testing.T) {
	t.Parallel()
	data := t.TempDir()
	var keys string
	for i := range 2 {
		// A restarted worker takes over its host's pinned consumer
		// after the pinned TTL.
		sv := startServe(t, data, "--local-workers", "--pinned-ttl", "1s")
		code, stdout, stderr := run(t, "rotate", "--server", sv.url, "--user", "u", "--wait", "--api-token-file", sv.token)
		if code != ExitOK {
			t.Fatalf("start %d: rotate: exit %d\n%s%s\nserve:\n%s", i, code, stdout, stderr, sv.logs.String())
		}
		code, stdout, _ = run(t, "worker", "list", "--server", sv.url, "--api-token-file", sv.token)
		if code != ExitOK || !strings.Contains(stdout, "gw (in-process)") || !strings.Contains(stdout, "m1 (in-process)") {
			t.Fatalf("worker list: exit %d\n%s", code, stdout)
		}
		if i == 1 && stdout != keys {
			t.Fatalf("the in-process workers' identities changed across a restart:\n%s\nthen\n%s", keys, stdout)
		}
		keys = stdout
		if code := sv.stop(); code != ExitOK {
			t.Fatalf("serve exited %d\n%s", code, sv.logs.String())
		}
	}
}

// serve --insecure-workers: workers without credentials, as before.
func TestServeInsecureWorkers(t *testing.T) {
	t.Parallel()
	sv := startServe(t, t.TempDir(), "--insecure-workers", "--local-workers")
	code, stdout, stderr := run(t, "rotate", "--server", sv.url, "--user", "u", "--wait", "--api-token-file", sv.token)
	if code != ExitOK {
		t.Fatalf("rotate: exit %d\n%s%s", code, stdout, stderr)
	}
	nc, err := nats.Connect(sv.natsURL)
	if err != nil {
		t.Fatalf("anonymous client with --insecure-workers: %v", err)
	}
	nc.Close()
	if code, _, stderr := run(t, "worker", "add", "gw", "--server", sv.url, "--api-token-file", sv.token); code != ExitUsage || !strings.Contains(stderr, "--insecure-workers") {
		t.Fatalf("worker add: exit %d\n%s", code, stderr)
	}
	if !strings.Contains(sv.logs.String(), "for development only") {
		t.Fatalf("no warning\n%s", sv.logs.String())
	}
}

func TestAdvertisedURL(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct{ listen, client, want string }{
		{"127.0.0.1:4222", "nats://127.0.0.1:4222", "nats://127.0.0.1:4222"},
		{"gw.example:4222", "nats://gw.example:4222", "nats://gw.example:4222"},
		{"0.0.0.0:4222", "nats://0.0.0.0:4222", ""},
		{"[::]:4222", "nats://[::]:4222", ""},
		{":4222", "nats://0.0.0.0:4222", ""},
		{"", "", ""},
	} {
		if got := advertisedURL(tt.listen, tt.client); got != tt.want {
			t.Errorf("advertisedURL(%q) = %q, want %q", tt.listen, got, tt.want)
		}
	}
}

// A pickup timeout that a crashed pinned worker's standby cannot beat is
// warned about; the defaults are not.
func TestServeWarnsPickupNotAbovePinnedTTL(t *testing.T) {
	t.Parallel()
	const warning = "--pickup-timeout is not above --pinned-ttl"
	sv := startServe(t, t.TempDir(), "--pickup-timeout", "30s")
	if code := sv.stop(); code != ExitOK || !strings.Contains(sv.logs.String(), warning) {
		t.Fatalf("serve --pickup-timeout 30s: exit %d, no warning %q:\n%s", code, warning, sv.logs.String())
	}
	sv = startServe(t, t.TempDir())
	if code := sv.stop(); code != ExitOK || strings.Contains(sv.logs.String(), warning) {
		t.Fatalf("serve with the defaults: exit %d, or warned:\n%s", code, sv.logs.String())
	}
}
