package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"
	"go.uber.org/goleak"

	"github.com/postrotate/postrotate/executor/proctest"
	"github.com/postrotate/postrotate/messages"
	"github.com/postrotate/postrotate/messages/envelope"
	"github.com/postrotate/postrotate/messages/layout"
	"github.com/postrotate/postrotate/worker/workertest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// writeCreds writes the credentials of host's worker (fresh keys) to a
// 0600 file and returns it and its user's public key.
func writeCreds(t *testing.T, host, url, prefix string) (string, string) {
	t.Helper()
	coord, err := envelope.NewCoordinator()
	if err != nil {
		t.Fatal(err)
	}
	user, _ := nkeys.CreateUser()
	curve, _ := nkeys.CreateCurveKeys()
	us, _ := user.Seed()
	cs, _ := curve.Seed()
	pub, _ := user.PublicKey()
	sign, sender := coord.PublicKeys()
	path := filepath.Join(t.TempDir(), host+".creds")
	err = envelope.WriteCredentials(path, envelope.Credentials{
		Host: host, NATS: url, UserSeed: string(us), CurveSeed: string(cs), CoordinatorSigningKey: sign,
		CoordinatorCurveKey: sender, InboxPrefix: envelope.InboxPrefix(host), Prefix: prefix,
	})
	if err != nil {
		t.Fatal(err)
	}
	return path, pub
}

func TestCredentialsSettleHostURLAndPrefix(t *testing.T) {
	t.Parallel()
	path, _ := writeCreds(t, "gw", "nats://from-file:4222", "")
	defaults := config{url: nats.DefaultURL, prefix: messages.DefaultPrefix, creds: path}

	cfg := defaults
	c, err := credentials(&cfg)
	if err != nil || c == nil || cfg.host != "gw" || cfg.url != "nats://from-file:4222" {
		t.Fatalf("from the file: %+v %v", cfg, err)
	}
	cfg = defaults
	cfg.host, cfg.url, cfg.urlSet = "gw", "nats://flag:4222", true
	if _, err := credentials(&cfg); err != nil || cfg.url != "nats://flag:4222" {
		t.Fatalf("--nats wins: %+v %v", cfg, err)
	}
	cfg = defaults
	cfg.host = "web-01"
	if _, err := credentials(&cfg); !errors.Is(err, errHostMismatch) {
		t.Fatalf("--host of another host: %v", err)
	}
	cfg = defaults
	cfg.prefix, cfg.prefixSet = "acme", true
	if _, err := credentials(&cfg); !errors.Is(err, errPrefixMismatch) {
		t.Fatalf("--prefix of another prefix: %v", err)
	}
	acme, _ := writeCreds(t, "gw", "", "acme")
	cfg = defaults
	cfg.creds = acme
	if _, err := credentials(&cfg); err != nil || cfg.prefix != "acme" || cfg.url != nats.DefaultURL {
		t.Fatalf("prefix from the file: %+v %v", cfg, err)
	}
	if _, err := credentials(&config{}); !errors.Is(err, errNoHost) {
		t.Fatalf("neither --creds nor --host: %v", err)
	}
	if c, err := credentials(&config{host: "gw"}); err != nil || c != nil {
		t.Fatalf("--host alone (development): %v", err)
	}
	if runtime.GOOS != "windows" {
		if err := os.Chmod(path, 0o644); err != nil {
			t.Fatal(err)
		}
		cfg = defaults
		if _, err := credentials(&cfg); !errors.Is(err, envelope.ErrCredentialsExposed) {
			t.Fatalf("0644 file: %v", err)
		}
	}
}

// logBuffer collects the worker's JSON logs.
type logBuffer struct{ proctest.Buffer }

// has reports whether a line has every field of want.
func (l *logBuffer) has(want map[string]string) bool {
	for _, line := range strings.Split(l.String(), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) != nil {
			continue
		}
		ok := true
		for k, v := range want {
			if m[k] != v {
				ok = false
			}
		}
		if ok {
			return true
		}
	}
	return false
}

// wait waits until the worker logged a line with every field of want.
func (r *running) wait(t *testing.T, want map[string]string) {
	t.Helper()
	workertest.Eventually(t, 20*time.Second, fmt.Sprintf("log line %v", want), func() bool {
		if r.logs.has(want) {
			return true
		}
		select {
		case <-r.done:
			t.Fatalf("the worker ended (%v) before logging %v:\n%s", r.err, want, r.logs.String())
		default:
		}
		return false
	})
}

// natsServer starts a nats-server with JetStream whose users are the
// admin (every right) and users, and creates the tasks stream and the
// consumer of host gw.
func natsServer(t *testing.T, users ...*server.NkeyUser) (*server.Server, *server.Options, nats.Option) {
	t.Helper()
	admin, _ := nkeys.CreateUser()
	adminPub, _ := admin.PublicKey()
	opts := &server.Options{Host: "127.0.0.1", Port: -1, Nkeys: append([]*server.NkeyUser{{Nkey: adminPub}}, users...)}
	srv := workertest.Server(t, opts)
	adminOpt := nats.Nkey(adminPub, admin.Sign)
	nc, err := nats.Connect(srv.ClientURL(), adminOpt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	subj := messages.Subjects{}
	lay := layout.Layout{Subjects: subj, PinnedTTL: time.Second}
	if _, err := js.CreateStream(t.Context(), lay.Streams()[0]); err != nil {
		t.Fatal(err)
	}
	if err := lay.EnsureHosts(t.Context(), js, "gw"); err != nil {
		t.Fatal(err)
	}
	return srv, opts, adminOpt
}

// running is run in a goroutine: done is closed when it returns err.
type running struct {
	logs *logBuffer
	done chan struct{}
	err  error
}

func startRun(t *testing.T, cfg config) *running {
	t.Helper()
	cfg.logLevel, cfg.stopGrace, cfg.heartbeat, cfg.prefix = "debug", 5*time.Second, time.Second, messages.DefaultPrefix
	cfg.authGiveUp = cmp.Or(cfg.authGiveUp, time.Minute)
	cfg.urlSet = true
	r := &running{logs: &logBuffer{}, done: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	go func() { r.err = run(ctx, cfg, r.logs); close(r.done) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.done:
		case <-time.After(30 * time.Second):
			t.Error("the worker did not stop")
		}
	})
	return r
}

// With --creds the worker connects as its nkey user and verifies tasks; when
// its user is revoked, its connection is closed and it ends with an error.
func TestRunWithCreds(t *testing.T) {
	t.Parallel()
	path, pub := writeCreds(t, "gw", "", "")
	srv, opts, _ := natsServer(t, &server.NkeyUser{Nkey: pub})
	c, _ := envelope.ReadCredentials(path)
	cfg := config{creds: path, url: srv.ClientURL(), name: "w1", authGiveUp: time.Second}
	r := startRun(t, cfg)
	r.wait(t, map[string]string{"message": "worker started", "host": c.Host})
	if r.logs.has(map[string]string{"message": "no --creds: tasks are not verified (unsigned tasks with their secrets in clear are run); for development only"}) {
		t.Fatal("a worker with --creds says its tasks are not verified")
	}
	// Revoke the user.
	revoked := opts.Clone()
	revoked.Nkeys = revoked.Nkeys[:1]
	if err := srv.ReloadOptions(revoked); err != nil {
		t.Fatal(err)
	}
	select {
	case <-r.done:
		if !errors.Is(r.err, errConnectionLost) || !errors.Is(r.err, nats.ErrAuthorization) {
			t.Fatalf("worker ended with %v", r.err)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("the worker kept running with a revoked user:\n%s", r.logs.String())
	}
}

// A server that refuses the worker's credentials for a moment — a
// coordinator restarting admits its workers once started — does not end
// the worker: it reconnects.
func TestRunSurvivesAShortRefusal(t *testing.T) {
	t.Parallel()
	path, pub := writeCreds(t, "gw", "", "")
	srv, opts, _ := natsServer(t, &server.NkeyUser{Nkey: pub})
	r := startRun(t, config{creds: path, url: srv.ClientURL(), name: "w1"})
	r.wait(t, map[string]string{"message": "worker started"})
	without := opts.Clone()
	without.Nkeys = without.Nkeys[:1]
	if err := srv.ReloadOptions(without); err != nil {
		t.Fatal(err)
	}
	r.wait(t, map[string]string{"message": "nats refuses the credentials; retrying (a restarting coordinator admits its workers once it has started)"})
	if err := srv.ReloadOptions(opts.Clone()); err != nil {
		t.Fatal(err)
	}
	r.wait(t, map[string]string{"message": "nats reconnected"})
	select {
	case <-r.done:
		t.Fatalf("the worker ended: %v", r.err)
	default:
	}
}

// A worker whose user may not do what it tries logs each permission
// violation, at level error, with the subject.
func TestRunLogsPermissionViolations(t *testing.T) {
	t.Parallel()
	path, pub := writeCreds(t, "gw", "", "")
	srv, _, _ := natsServer(t, &server.NkeyUser{Nkey: pub, Permissions: &server.Permissions{
		Publish:   &server.SubjectPermission{Allow: []string{"postrotate.results.>"}},
		Subscribe: &server.SubjectPermission{Allow: []string{envelope.InboxPrefix("gw") + ".>"}},
	}})
	r := startRun(t, config{creds: path, url: srv.ClientURL(), name: "w1"})
	subject := "$JS.API.CONSUMER.INFO." + messages.Subjects{}.TasksStream() + "." + messages.Subjects{}.Consumer("gw")
	r.wait(t, map[string]string{"message": "nats permission violation", "level": "error", "operation": "publish", "subject": subject})
}

// Without --creds (development), the worker runs and warns that tasks are
// not verified; a credentials file's user is refused by a server that
// does not know it, with a hint.
func TestRunWithoutCreds(t *testing.T) {
	t.Parallel()
	srv := workertest.Server(t, &server.Options{Host: "127.0.0.1", Port: -1})
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	subj := messages.Subjects{}
	lay := layout.Layout{Subjects: subj}
	if _, err := js.CreateStream(t.Context(), lay.Streams()[0]); err != nil {
		t.Fatal(err)
	}
	if err := lay.EnsureHosts(t.Context(), js, "dev"); err != nil {
		t.Fatal(err)
	}
	r := startRun(t, config{host: "dev", url: srv.ClientURL(), name: "w1"})
	r.wait(t, map[string]string{"message": "worker started"})
	if !r.logs.has(map[string]string{"level": "warn", "message": "no --creds: tasks are not verified (unsigned tasks with their secrets in clear are run); for development only"}) {
		t.Fatalf("no warning:\n%s", r.logs.String())
	}

	path, _ := writeCreds(t, "gw", "", "")
	authSrv, _, _ := natsServer(t)
	err = run(t.Context(), config{creds: path, url: authSrv.ClientURL(), urlSet: true, prefix: messages.DefaultPrefix, logLevel: "error"}, &logBuffer{})
	if !errors.Is(err, nats.ErrAuthorization) {
		t.Fatalf("unknown user: %v", err)
	}
}
