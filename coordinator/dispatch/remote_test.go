package dispatch

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/postrotate/postrotate/coordinator/rotation"
	"github.com/postrotate/postrotate/executor/proctest"
	"github.com/postrotate/postrotate/worker/workertest"
)

// buildWorker builds bin/postrotate-worker for the test.
func buildWorker(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "postrotate-worker")
	cmd := exec.Command("go", "build", "-o", bin, "github.com/postrotate/postrotate/worker/cmd/postrotate-worker")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build postrotate-worker: %v\n%s", err, out)
	}
	return bin
}

// A postrotate-worker process started before the coordinator created its
// consumer waits for it, runs the task over a real TCP connection, logs
// nothing secret at debug level, and on SIGTERM exits cleanly.
func TestRemoteWorkerProcess(t *testing.T) {
	t.Parallel()
	bin := buildWorker(t)
	b := setupListen(t, false, "127.0.0.1:0")
	url := b.broker.ClientURL()
	if !strings.HasPrefix(url, "nats://127.0.0.1:") {
		t.Fatalf("client URL %q", url)
	}
	// The consumer of gw-2 does not exist yet.
	w := startWorkerProcess(t, bin, url)
	w.waitForMissingConsumer(t)
	if err := b.layout.EnsureHosts(t.Context(), b.js, "gw-2"); err != nil {
		t.Fatal(err)
	}
	w.rotateOnGW2(t, b)
	w.stopWithSIGTERM(t)
	w.checkLogs(t)
	_ = os.Remove(bin)
}

// workerProcess is a running postrotate-worker of host gw-2, named
// remote-1, logging at debug level into logs.
type workerProcess struct {
	cmd    *exec.Cmd
	logs   *proctest.Buffer
	exited chan error // receives cmd.Wait's error once
}

// startWorkerProcess starts bin as the worker of gw-2 against the broker at
// url; the test's cleanup kills it.
func startWorkerProcess(t *testing.T, bin, url string) *workerProcess {
	t.Helper()
	w := &workerProcess{logs: &proctest.Buffer{}, exited: make(chan error, 1)}
	w.cmd = exec.Command(bin, "--host", "gw-2", "--nats", url, "--name", "remote-1", "--log-level", "debug", "--stop-grace", "30s")
	w.cmd.Stdout, w.cmd.Stderr = w.logs, w.logs
	if err := w.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { w.exited <- w.cmd.Wait() }()
	t.Cleanup(func() {
		_ = w.cmd.Process.Kill()
		<-w.exited
	})
	return w
}

// waitForMissingConsumer waits for the worker to report that its host has
// no task consumer yet: it says so only in its logs, which are polled.
func (w *workerProcess) waitForMissingConsumer(t *testing.T) {
	t.Helper()
	defer func() {
		if t.Failed() {
			t.Logf("worker logs:\n%s", w.logs.String())
		}
	}()
	workertest.Eventually(t, 20*time.Second, "the worker reports the missing consumer", func() bool {
		return strings.Contains(w.logs.String(), "no task consumer for this host yet")
	})
}

// rotateOnGW2 runs b's plan with its step moved to gw-2 and checks that
// the worker process ran it.
func (w *workerProcess) rotateOnGW2(t *testing.T, b *bundle) {
	t.Helper()
	p := *b.plan
	p.Steps = append(p.Steps[:0:0], p.Steps...)
	p.Steps[0].Host = "gw-2"
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	out, err := engine(New(b.js, Options{}), 0).Run(ctx, rotation.Rotation{ID: rotation.NewID(), Plan: &p, NewPassword: "New-" + marker, OldPassword: marker})
	if err != nil || !out.Success() {
		t.Fatalf("Run = %+v, %v\nworker logs:\n%s", out, err, w.logs.String())
	}
	if r := out.Results[0]; r.Worker != "remote-1" || r.Host != "gw-2" || r.Stdout != "ok\n" {
		t.Fatalf("result = %+v", r)
	}
}

// stopWithSIGTERM sends SIGTERM and checks that the worker exits cleanly.
func (w *workerProcess) stopWithSIGTERM(t *testing.T) {
	t.Helper()
	if err := w.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-w.exited:
		w.exited <- err // for the cleanup
		if err != nil {
			t.Fatalf("worker exit after SIGTERM: %v\n%s", err, w.logs.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("worker did not exit after SIGTERM; logs:\n%s", w.logs.String())
	}
}

// checkLogs checks that the worker's debug logs hold no password and tell
// its start, the script's end and its stop.
func (w *workerProcess) checkLogs(t *testing.T) {
	t.Helper()
	all := w.logs.String()
	if strings.Contains(all, marker) {
		t.Fatalf("the marker password reached the worker's debug logs:\n%s", all)
	}
	for _, want := range []string{"worker started", "script finished", "worker stopped"} {
		if !strings.Contains(all, want) {
			t.Errorf("worker logs lack %q:\n%s", want, all)
		}
	}
}
