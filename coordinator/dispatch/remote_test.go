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

	"github.com/postrotate/postrotate/executor/proctest"
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
	var logs proctest.Buffer
	cmd := exec.Command(bin, "--host", "gw-2", "--nats", url, "--name", "remote-1", "--log-level", "debug", "--stop-grace", "30s")
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(logs.String(), "no task consumer for this host yet") {
		if time.Now().After(deadline) {
			t.Fatalf("worker did not report the missing consumer; logs:\n%s", logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := b.layout.EnsureHosts(t.Context(), b.js, "gw-2"); err != nil {
		t.Fatal(err)
	}
	p := *b.plan
	p.Steps = append(p.Steps[:0:0], p.Steps...)
	p.Steps[0].Host = "gw-2"
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	out, err := New(b.js, Options{}).Run(ctx, Rotation{ID: NewID(), Plan: &p, NewPassword: "New-" + marker, OldPassword: marker})
	if err != nil || !out.Success() {
		t.Fatalf("Run = %+v, %v\nworker logs:\n%s", out, err, logs.String())
	}
	if r := out.Results[0]; r.Worker != "remote-1" || r.Host != "gw-2" || r.Stdout != "ok\n" {
		t.Fatalf("result = %+v", r)
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		exited <- err // for the cleanup
		if err != nil {
			t.Fatalf("worker exit after SIGTERM: %v\n%s", err, logs.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("worker did not exit after SIGTERM; logs:\n%s", logs.String())
	}
	all := logs.String()
	if strings.Contains(all, marker) {
		t.Fatalf("the marker password reached the worker's debug logs:\n%s", all)
	}
	for _, want := range []string{"worker started", "script finished", "worker stopped"} {
		if !strings.Contains(all, want) {
			t.Errorf("worker logs lack %q:\n%s", want, all)
		}
	}
	_ = os.Remove(bin)
}
