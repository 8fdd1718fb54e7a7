package e2e

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/postrotate/postrotate/executor/proctest"
	"github.com/postrotate/postrotate/worker/workertest"
)

var bins struct {
	postrotate, worker, natsServer string
}

func TestMain(m *testing.M) {
	flag.Parse()
	if flag.Lookup("test.list").Value.String() != "" {
		os.Exit(m.Run()) // go test -list (make fuzz): nothing to build
	}
	dir, err := os.MkdirTemp("", "postrotate-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	build := func(out, pkg string) string {
		path := filepath.Join(dir, out)
		cmd := exec.Command("go", "build", "-o", path, pkg)
		if b, err := cmd.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "go build %s: %v\n%s", pkg, err, b)
			os.RemoveAll(dir)
			os.Exit(1)
		}
		return path
	}
	bins.postrotate = build("postrotate", "github.com/postrotate/postrotate/coordinator/cmd/postrotate")
	bins.worker = build("postrotate-worker", "github.com/postrotate/postrotate/worker/cmd/postrotate-worker")
	bins.natsServer = build("nats-server", "github.com/nats-io/nats-server/v2")
	goleak.VerifyTestMain(m, goleak.Cleanup(func(code int) {
		os.RemoveAll(dir)
		os.Exit(code)
	}))
}

// proc is a process started by a test.
type proc struct {
	t      *testing.T
	name   string
	cmd    *exec.Cmd
	logs   *proctest.Buffer
	exited chan struct{}
	err    error
	// hide, when set, masks what the logs printed on failure must not show.
	hide func(string) string
}

func start(t *testing.T, name, bin string, args ...string) *proc {
	t.Helper()
	p := &proc{t: t, name: name, logs: &proctest.Buffer{}, exited: make(chan struct{})}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Stdout, p.cmd.Stderr = p.logs, p.logs
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			logs := p.logs.String()
			if p.hide != nil {
				logs = p.hide(logs)
			}
			t.Logf("--- %s logs ---\n%s", name, logs)
		}
	})
	return p
}

// kill sends SIGKILL to the process group (the process and its scripts).
func (p *proc) kill() {
	select {
	case <-p.exited:
		return
	default:
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	<-p.exited
}

// killProcess sends SIGKILL to the process only: its scripts, in their own
// process groups, live on as orphans, as when a worker crashes.
func (p *proc) killProcess() {
	_ = p.cmd.Process.Kill()
	<-p.exited
}

func (p *proc) signal(sig syscall.Signal) {
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatalf("signal %s: %v", p.name, err)
	}
}

// waitExit waits for the process to exit and returns its error.
func (p *proc) waitExit(d time.Duration) error {
	p.t.Helper()
	select {
	case <-p.exited:
		return p.err
	case <-time.After(d):
		p.t.Fatalf("%s did not exit within %s", p.name, d)
		return nil
	}
}

// waitLog waits until the process logged s.
func (p *proc) waitLog(s string) {
	p.t.Helper()
	workertest.Eventually(p.t, 30*time.Second, fmt.Sprintf("%s logs %q", p.name, s), func() bool {
		select {
		case <-p.exited:
			p.t.Fatalf("%s exited (%v) before logging %q", p.name, p.err, s)
		default:
		}
		return strings.Contains(p.logs.String(), s)
	})
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func waitFile(t *testing.T, path string) {
	t.Helper()
	workertest.Eventually(t, 30*time.Second, path+" appears", func() bool {
		_, err := os.Stat(path)
		return err == nil
	})
}

func touch(t *testing.T, path string) {
	t.Helper()
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
}

// api calls the HTTP API of a serve process.
type api struct {
	t    *testing.T
	base string
}

func (a api) do(method, path string, body any, out any) int {
	a.t.Helper()
	var rd *bytes.Reader
	if body != nil {
		data, _ := json.Marshal(body)
		rd = bytes.NewReader(data)
	} else {
		rd = bytes.NewReader(nil)
	}
	req, err := http.NewRequest(method, a.base+path, rd)
	if err != nil {
		a.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	if out != nil {
		_ = json.NewDecoder(resp.Body).Decode(out)
	}
	return resp.StatusCode
}

// waitUp waits until GET /healthz answers 200.
func (a api) waitUp() {
	a.t.Helper()
	workertest.Eventually(a.t, 30*time.Second, a.base+" healthy", func() bool {
		return a.do("GET", "/healthz", nil, nil) == http.StatusOK
	})
}
