package dispatch

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/postrotate/postrotate/coordinator/broker"
	"github.com/postrotate/postrotate/coordinator/broker/brokertest"
	"github.com/postrotate/postrotate/coordinator/inventory"
	"github.com/postrotate/postrotate/coordinator/plan"
	"github.com/postrotate/postrotate/coordinator/rotation"
	"github.com/postrotate/postrotate/messages"
	"github.com/postrotate/postrotate/messages/layout"
	"github.com/postrotate/postrotate/worker"
	"github.com/postrotate/postrotate/worker/workertest"
)

type bundle struct {
	broker *broker.Broker
	js     jetstream.JetStream
	nc     *nats.Conn
	layout layout.Layout
	plan   *plan.Plan
	dir    string
}

const marker = "Marker-0ld-Passw0rd-51c3"

const benchInventory = `version: 1
records:
  - {uid: cfg, type: pamConfiguration, gateway: gw-1}
  - uid: u
    type: pamUser
    fields: [{type: login, value: u}, {type: password, value: ` + marker + `}]
    rotation: {type: scripts_only, configuration: cfg}
    scripts: [{file: step.sh, timeout: 10s}]
`

const stepScript = "#!/bin/sh\ncat >/dev/null\necho ok\n"

// setup starts an embedded broker, the layout, and (when withWorker) the
// in-process worker of gw-1.
func setup(tb testing.TB, withWorker bool) *bundle { return setupListen(tb, withWorker, "") }

// setupListen is setup with the broker listening on listen ("" = in-process only).
func setupListen(tb testing.TB, withWorker bool, listen string) *bundle {
	tb.Helper()
	dir := tb.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "step.sh"), []byte(stepScript), 0o755); err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "inv.yaml"), []byte(benchInventory), 0o644); err != nil {
		tb.Fatal(err)
	}
	inv, err := inventory.Load(filepath.Join(dir, "inv.yaml"))
	if err != nil {
		tb.Fatal(err)
	}
	p, err := plan.New(inv, "u")
	if err != nil {
		tb.Fatal(err)
	}
	js, b := brokertest.JetStream(tb, broker.Options{StoreDir: filepath.Join(dir, "js"), Listen: listen})
	nc := js.Conn()
	var layout layout.Layout
	ctx := context.Background()
	if err := layout.Setup(ctx, js); err != nil {
		tb.Fatal(err)
	}
	if err := layout.EnsureHosts(ctx, js, p.Hosts()...); err != nil {
		tb.Fatal(err)
	}
	if withWorker {
		w, err := worker.New(js, worker.Options{Host: "gw-1", FetchWait: time.Second})
		if err != nil {
			tb.Fatal(err)
		}
		workertest.Start(tb, w, 0)
	}
	return &bundle{broker: b, js: js, nc: nc, layout: layout, plan: p, dir: dir}
}

func TestLayoutIsIdempotent(t *testing.T) {
	t.Parallel()
	b := setup(t, false)
	if err := b.layout.Setup(t.Context(), b.js); err != nil {
		t.Fatalf("second Setup: %v", err)
	}
	if err := b.layout.EnsureHosts(t.Context(), b.js, "gw-1", "web.01"); err != nil {
		t.Fatalf("EnsureHosts: %v", err)
	}
	cons, err := b.js.Consumer(t.Context(), "POSTROTATE_TASKS", "host_web_2E01")
	if err != nil {
		t.Fatal(err)
	}
	if cfg := cons.CachedInfo().Config; cfg.MaxAckPending != 1 || cfg.FilterSubject != "postrotate.tasks.web_2E01" || cfg.AckPolicy != jetstream.AckExplicitPolicy {
		t.Fatalf("consumer config = %+v", cfg)
	}
}

// Results and events reach the streams integrations read.
func TestRunPublishesResultsAndEvents(t *testing.T) {
	t.Parallel()
	b := setup(t, true)
	events := make(chan string, 10)
	sub, err := b.nc.Subscribe("postrotate.events.>", func(m *nats.Msg) { events <- m.Subject })
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	e := engine(New(b.js, Options{}), 0)
	out, err := e.Run(t.Context(), rotation.Rotation{ID: rotation.NewID(), Plan: b.plan, NewPassword: "new-pw", OldPassword: "old-pw"})
	if err != nil || !out.Success() || len(out.Results) != 1 || out.Results[0].Stdout != "ok\n" {
		t.Fatalf("Run = %+v, %v", out, err)
	}
	e.Finished(t.Context(), b.plan.User.UID, out, "")
	want := []string{"postrotate.events.rotation.started", "postrotate.events.step.started", "postrotate.events.step.completed", "postrotate.events.rotation.completed"}
	for _, w := range want {
		select {
		case got := <-events:
			if got != w {
				t.Fatalf("event %s, want %s", got, w)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("no event %s", w)
		}
	}
	s, err := b.js.Stream(t.Context(), "POSTROTATE_RESULTS")
	if err != nil {
		t.Fatal(err)
	}
	msg, err := s.GetLastMsgForSubject(t.Context(), "postrotate.results."+out.RotationID+".1")
	if err != nil {
		t.Fatal(err)
	}
	var rr messages.RotationResult
	if err := json.Unmarshal(msg.Data, &rr); err != nil || !rr.Success {
		t.Fatalf("stored result %s: %v", msg.Data, err)
	}
}

// A step whose host has no worker fails at its deadline, naming the host;
// the rotation does not hang.
func TestNoWorkerFailsAtDeadline(t *testing.T) {
	t.Parallel()
	b := setup(t, false)
	d := New(b.js, Options{KillGrace: 100 * time.Millisecond})
	p := *b.plan
	p.Steps = append([]plan.Step(nil), p.Steps...)
	p.Steps[0].Script.Timeout = 100 * time.Millisecond
	out, err := engine(d, 300*time.Millisecond).Run(t.Context(), rotation.Rotation{ID: rotation.NewID(), Plan: &p, NewPassword: "n", OldPassword: "o"})
	if err != nil {
		t.Fatal(err)
	}
	if out.Failed != 1 || !strings.Contains(out.Results[0].Error, `"gw-1"`) {
		t.Fatalf("outcome = %+v", out)
	}
}

// BenchmarkRotationStep runs a one-step rotation through JetStream and an
// in-process worker with the local executor; compare it with
// BenchmarkDirectScript, the same script started directly.
func BenchmarkRotationStep(b *testing.B) {
	bd := setup(b, true)
	d := New(bd.js, Options{})
	ctx := context.Background()
	for b.Loop() {
		out, err := engine(d, 0).Run(ctx, rotation.Rotation{ID: rotation.NewID(), Plan: bd.plan, NewPassword: "new-pw", OldPassword: "old-pw"})
		if err != nil || !out.Success() {
			b.Fatalf("Run = %+v, %v", out, err)
		}
	}
}

// BenchmarkRotation10Steps separates the per-step cost from the
// per-rotation cost (result watch, rotation events) of BenchmarkRotationStep.
func BenchmarkRotation10Steps(b *testing.B) {
	bd := setup(b, true)
	p := *bd.plan
	p.Steps = nil
	for i := 1; i <= 10; i++ {
		st := bd.plan.Steps[0]
		st.Index = i
		p.Steps = append(p.Steps, st)
	}
	d := New(bd.js, Options{})
	ctx := context.Background()
	for b.Loop() {
		out, err := engine(d, 0).Run(ctx, rotation.Rotation{ID: rotation.NewID(), Plan: &p, NewPassword: "new-pw", OldPassword: "old-pw"})
		if err != nil || !out.Success() || len(out.Results) != 10 {
			b.Fatalf("Run = %+v, %v", out, err)
		}
	}
}

func BenchmarkDirectScript(b *testing.B) {
	dir := b.TempDir()
	path := filepath.Join(dir, "step.sh")
	if err := os.WriteFile(path, []byte(stepScript), 0o755); err != nil {
		b.Fatal(err)
	}
	stdin := []byte("eyJuZXdQYXNzd29yZCI6Im5ldy1wdyJ9\n")
	for b.Loop() {
		var out bytes.Buffer
		cmd := exec.Command(path)
		cmd.Stdin = bytes.NewReader(stdin)
		cmd.Stdout = &out
		if err := cmd.Run(); err != nil || out.String() != "ok\n" {
			b.Fatalf("run: %v %q", err, out.String())
		}
	}
}

// engine is the rotation engine over d, as serve wires them; pickup is its
// PickupTimeout (0: the default).
func engine(d *Dispatcher, pickup time.Duration) *rotation.Engine {
	return rotation.NewEngine(d, rotation.EngineOptions{PickupTimeout: pickup})
}
