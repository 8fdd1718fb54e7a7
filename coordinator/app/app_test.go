package app

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/postrotate/postrotate/coordinator/broker"
	"github.com/postrotate/postrotate/coordinator/broker/brokertest"
	"github.com/postrotate/postrotate/coordinator/dispatch"
	"github.com/postrotate/postrotate/coordinator/inventory"
	"github.com/postrotate/postrotate/coordinator/rotation"
	"github.com/postrotate/postrotate/coordinator/runs"
	"github.com/postrotate/postrotate/coordinator/server"
	"github.com/postrotate/postrotate/coordinator/vault"
	"github.com/postrotate/postrotate/messages"
	"github.com/postrotate/postrotate/worker"
	"github.com/postrotate/postrotate/worker/workertest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// nats-server internals that can outlive WaitForShutdown by a
		// moment: the process-wide access-time ticker and a stream's
		// state flusher (seen once in about ten runs of this package).
		goleak.IgnoreTopFunction("github.com/nats-io/nats-server/v2/server/ats.Register.func1"),
		goleak.IgnoreTopFunction("github.com/nats-io/nats-server/v2/server.(*fileStore).flushStreamStateLoop"),
	)
}

// inventoryFor writes scripts and an inventory with two users (alice, bob)
// whose scripts run on gateway gw and machine m1.
func inventoryFor(t *testing.T, scripts map[string]string, userScripts, machineScripts string) *inventory.Inventory {
	return inventoryFor2(t, scripts, userScripts, userScripts, machineScripts)
}

// inventoryFor2 gives alice and bob their own scripts; bob's configuration
// has its own gateway, gw2.
func inventoryFor2(t *testing.T, scripts map[string]string, aliceScripts, bobScripts, machineScripts string) *inventory.Inventory {
	t.Helper()
	dir := t.TempDir()
	for name, content := range scripts {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	y := fmt.Sprintf(`version: 1
records:
  - {uid: cfg, type: pamConfiguration, gateway: gw}
  - {uid: cfg2, type: pamConfiguration, gateway: gw2}
  - {uid: m1, type: pamMachine, worker: m1, scripts: %s}
  - {uid: dir1, type: pamDirectory}
  - uid: alice
    type: pamUser
    fields: [{type: login, value: alice}, {type: password, value: a-old}]
    rotation: {type: scripts_only, resource: m1, configuration: cfg}
    scripts: %s
  - uid: bob
    type: pamUser
    fields: [{type: login, value: bob}, {type: password, value: b-old}]
    rotation: {type: scripts_only, configuration: cfg2, schedule: "every 24h"}
    scripts: %s
  - uid: gen
    type: pamUser
    fields: [{type: login, value: gen}]
    rotation: {type: general, resource: dir1, configuration: cfg}
`, machineScripts, aliceScripts, bobScripts)
	path := filepath.Join(dir, "inv.yaml")
	if err := os.WriteFile(path, []byte(y), 0o644); err != nil {
		t.Fatal(err)
	}
	inv, err := inventory.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	return inv
}

// testKey is the vault key of the servers of these tests: a restarted
// server opens the store of the one before.
var testKey = vault.NewKey()

func startBroker(t *testing.T) (jetstream.JetStream, string) {
	t.Helper()
	store := t.TempDir()
	js, _ := brokertest.JetStream(t, broker.Options{StoreDir: store})
	return js, store
}

// startServer starts the coordinator of inv on js, with opts (its
// Inventory and Key set here).
func startServer(t *testing.T, js jetstream.JetStream, inv *inventory.Inventory, opts Options) *App {
	t.Helper()
	opts.Inventory, opts.Key = inv, &testKey
	s, err := New(js, opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Stop(context.Background()) })
	return s
}

// startWorkers enrolls the workers of hosts with s and starts them on js,
// each with the trust of its credentials.
func startWorkers(t *testing.T, s *App, js jetstream.JetStream, hosts ...string) {
	t.Helper()
	for _, h := range hosts {
		en, err := s.Enroller().Enroll(t.Context(), h)
		if err != nil {
			t.Fatal(err)
		}
		trust, err := en.Credentials.Trust()
		if err != nil {
			t.Fatal(err)
		}
		w, err := worker.New(js, worker.Options{Host: h, Name: h + "-test", FetchWait: 500 * time.Millisecond, Trust: trust})
		if err != nil {
			t.Fatal(err)
		}
		workertest.Start(t, w, 0)
	}
}

func do(t *testing.T, h http.Handler, method, path, body string, out any) int {
	t.Helper()
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if out != nil {
		if err := json.Unmarshal(rec.Body.Bytes(), out); err != nil {
			t.Fatalf("%s %s: %d %s: %v", method, path, rec.Code, rec.Body, err)
		}
	}
	return rec.Code
}

// waitFinished waits for the completed or failed event of rotation id on
// js's events stream, published once the run's outcome is stored, and
// returns the run as GET /v1/rotations/{id} on h shows it then: finished.
func waitFinished(t *testing.T, js jetstream.JetStream, h http.Handler, id string) rotation.View {
	t.Helper()
	waitRotationEnded(t, js, id, 60*time.Second)
	var v rotation.View
	if code := do(t, h, "GET", "/v1/rotations/"+id, "", &v); code != http.StatusOK {
		t.Fatalf("GET rotation: %d", code)
	}
	if !v.Finished() {
		t.Fatalf("rotation %s not finished: %+v", id, v)
	}
	return v
}

// waitRotationEnded waits for the completed or failed event of rotation id
// on js's events stream, failing the test after within.
func waitRotationEnded(t *testing.T, js jetstream.JetStream, id string, within time.Duration) {
	t.Helper()
	subj := messages.Subjects{}
	cons, err := js.OrderedConsumer(t.Context(), subj.EventsStream(), jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{subj.RotationEvent(messages.EventCompleted), subj.RotationEvent(messages.EventFailed)},
	})
	if err != nil {
		t.Fatalf("follow the rotation events: %v", err)
	}
	deadline := time.Now().Add(within)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			t.Fatalf("rotation %s: no completed or failed event within %s", id, within)
		}
		msg := workertest.Next(t, cons, left)
		var ev messages.RotationEvent
		if err := json.Unmarshal(msg.Data(), &ev); err != nil {
			t.Fatalf("event on %s: %v", msg.Subject(), err)
		}
		if ev.RotationID == id {
			return
		}
	}
}

// waitFile waits until path exists: a script's file announces itself
// nowhere, so it is polled.
func waitFile(t *testing.T, path string) {
	t.Helper()
	workertest.Eventually(t, 30*time.Second, path+" appears", func() bool {
		_, err := os.Stat(path)
		return err == nil
	})
}

// A rotation of alice through the API: started without showing its
// credentials, run by gw's and m1's workers, listed under alice only.
func TestRotationThroughHTTP(t *testing.T) {
	t.Parallel()
	inv := inventoryFor(t, map[string]string{"u.sh": "echo user $POSTROTATE_STEP\n", "m.sh": "echo machine\n"}, "[{file: u.sh}]", "[{file: m.sh}]")
	js, _ := startBroker(t)
	s := startServer(t, js, inv, Options{})
	startWorkers(t, s, js, "gw", "m1")
	h := s.Handler()

	run := postRotationOfAlice(t, h)
	v := waitFinished(t, js, h, run.ID)
	if v.State != runs.StateCompleted || len(v.Results) != 2 || v.Results[0].Host != "gw" || v.Results[1].Host != "m1" ||
		v.Results[0].Worker != "gw-test" || v.Results[1].Stdout != "machine\n" {
		t.Fatalf("view = %+v", v)
	}
	checkListedUnderAlice(t, h, run.ID)
	if code := do(t, h, "GET", "/healthz", "", nil); code != http.StatusOK {
		t.Fatalf("healthz: %d", code)
	}
}

// postRotationOfAlice starts the rotation of alice and checks the run the
// API answers: two steps, and not its credentials.
func postRotationOfAlice(t *testing.T, h http.Handler) runs.Run {
	t.Helper()
	var run runs.Run
	if code := do(t, h, "POST", "/v1/rotations", `{"user":"alice"}`, &run); code != http.StatusAccepted || run.ID == "" || len(run.Steps) != 2 {
		t.Fatalf("POST: %d %+v", code, run)
	}
	if run.Secret != nil {
		t.Fatal("the API returned the run's credentials")
	}
	return run
}

// checkListedUnderAlice checks that the rotations of alice are the one
// with id, and that bob has none.
func checkListedUnderAlice(t *testing.T, h http.Handler, id string) {
	t.Helper()
	var list []runs.Run
	if code := do(t, h, "GET", "/v1/rotations?user=alice", "", &list); code != http.StatusOK || len(list) != 1 || list[0].ID != id {
		t.Fatalf("list: %d %+v", code, list)
	}
	if code := do(t, h, "GET", "/v1/rotations?user=bob", "", &list); code != http.StatusOK || len(list) != 0 {
		t.Fatalf("list bob: %d %+v", code, list)
	}
}

func TestAPIErrors(t *testing.T) {
	t.Parallel()
	inv := inventoryFor(t, map[string]string{"u.sh": "exit 0\n", "m.sh": "exit 0\n"}, "[{file: u.sh}]", "[{file: m.sh}]")
	js, _ := startBroker(t)
	h := startServer(t, js, inv, Options{}).Handler()
	tests := []struct {
		method, path, body string
		want               int
	}{
		{"POST", "/v1/rotations", `{"user":`, http.StatusBadRequest},
		{"POST", "/v1/rotations", `{}`, http.StatusBadRequest},
		{"POST", "/v1/rotations", `{"user":"alice","extra":1}`, http.StatusBadRequest},
		{"POST", "/v1/rotations", `{"user":"nobody"}`, http.StatusNotFound},
		{"POST", "/v1/rotations", `{"user":"cfg"}`, http.StatusNotFound},
		{"POST", "/v1/rotations", `{"user":"gen"}`, http.StatusUnprocessableEntity},
		{"GET", "/v1/rotations/nope", "", http.StatusNotFound},
		{"GET", "/v1/rotations/a.b", "", http.StatusNotFound},
		{"DELETE", "/v1/rotations", "", http.StatusMethodNotAllowed},
	}
	for _, tt := range tests {
		var eb server.ErrorBody
		var out any = &eb
		if tt.want == http.StatusMethodNotAllowed {
			out = nil
		}
		if code := do(t, h, tt.method, tt.path, tt.body, out); code != tt.want || (out != nil && eb.Error == "") {
			t.Errorf("%s %s %s: %d %q, want %d with a message", tt.method, tt.path, tt.body, code, eb.Error, tt.want)
		}
	}
}

// A second rotation of a user while one runs is refused with 409; another
// user's rotation runs in parallel.
func TestConcurrency(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	// Each user's script marks that it started and waits for the other's
	// mark: both succeed only when the two rotations run at the same time.
	wait := func(me, other string) string {
		return fmt.Sprintf("touch %[1]s/%[2]s\ni=0\nwhile [ ! -e %[1]s/%[3]s ]; do sleep 0.05; i=$((i+1)); [ $i -gt 600 ] && exit 9; done\nexit 0\n", dir, me, other)
	}
	inv := inventoryFor2(t, map[string]string{"a.sh": wait("alice", "bob"), "b.sh": wait("bob", "alice"), "m.sh": "exit 0\n"},
		"[{file: a.sh}]", "[{file: b.sh}]", "[{file: m.sh}]")
	js, _ := startBroker(t)
	s := startServer(t, js, inv, Options{})
	startWorkers(t, s, js, "gw", "gw2", "m1")
	h := s.Handler()

	var a, b runs.Run
	if code := do(t, h, "POST", "/v1/rotations", `{"user":"alice"}`, &a); code != http.StatusAccepted {
		t.Fatalf("POST alice: %d", code)
	}
	waitFile(t, filepath.Join(dir, "alice"))
	var eb server.ErrorBody
	if code := do(t, h, "POST", "/v1/rotations", `{"user":"alice"}`, &eb); code != http.StatusConflict || !strings.Contains(eb.Error, a.ID) {
		t.Fatalf("second POST alice: %d %q", code, eb.Error)
	}
	if code := do(t, h, "POST", "/v1/rotations", `{"user":"bob"}`, &b); code != http.StatusAccepted {
		t.Fatalf("POST bob: %d", code)
	}
	for _, id := range []string{a.ID, b.ID} {
		if v := waitFinished(t, js, h, id); v.State != runs.StateCompleted {
			t.Fatalf("rotation %s: %+v", id, v)
		}
	}
	// The lock is released with the run.
	if code := do(t, h, "POST", "/v1/rotations", `{"user":"alice"}`, &a); code != http.StatusAccepted {
		t.Fatalf("POST alice after the first finished: %d", code)
	}
	waitFinished(t, js, h, a.ID)
}

// stoppedMidScript starts a server on js with inv and workers of gw and m1,
// rotates alice, and stops the server once alice's machine script has
// created dir/m.started: the rotation is left running.
func stoppedMidScript(t *testing.T, js jetstream.JetStream, inv *inventory.Inventory, dir string) (*App, runs.Run) {
	t.Helper()
	s, err := New(js, Options{Inventory: inv, Key: &testKey})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	startWorkers(t, s, js, "gw", "m1")
	run, err := s.Rotations().Rotate(t.Context(), "alice")
	if err != nil {
		t.Fatal(err)
	}
	waitFile(t, filepath.Join(dir, "m.started"))
	if err := s.Stop(t.Context()); err != nil {
		t.Fatal(err)
	}
	return s, run
}

// A coordinator stopped mid-rotation leaves the run in JetStream; the next
// one resumes it: finished steps are not run again, the rotation completes.
func TestResumeAfterRestart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	count := filepath.Join(dir, "count")
	inv := inventoryFor(t, map[string]string{
		"u.sh": "echo u >> " + count + "\n",
		"m.sh": fmt.Sprintf("echo m >> %[1]s\ntouch %[2]s/m.started\nwhile [ ! -e %[2]s/release ]; do sleep 0.05; done\n", count, dir),
	}, "[{file: u.sh}]", "[{file: m.sh}]")
	js, _ := startBroker(t)
	s1, run := stoppedMidScript(t, js, inv, dir)
	if r, err := s1.runs.Get(t.Context(), run.ID); err != nil || r.State != runs.StateRunning {
		t.Fatalf("after stop: %+v %v", r, err)
	}
	s2 := startServer(t, js, inv, Options{})
	if err := os.WriteFile(filepath.Join(dir, "release"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	v := waitFinished(t, js, s2.Handler(), run.ID)
	if v.State != runs.StateCompleted || len(v.Results) != 2 {
		t.Fatalf("resumed run: %+v", v)
	}
	data, _ := os.ReadFile(count)
	if got := strings.Fields(string(data)); strings.Join(got, ",") != "u,m" {
		t.Fatalf("scripts ran %v, want each once", got)
	}
}

// A step whose host has no live worker fails at its deadline, naming the
// host, and the rotation ends.
func TestOfflineHost(t *testing.T) {
	t.Parallel()
	inv := inventoryFor(t, map[string]string{"u.sh": "exit 0\n", "m.sh": "exit 0\n"}, "[{file: u.sh, timeout: 1s}]", "[{file: m.sh, timeout: 1s}]")
	js, _ := startBroker(t)
	s := startServer(t, js, inv, Options{PickupTimeout: 500 * time.Millisecond, Dispatch: dispatch.Options{KillGrace: 500 * time.Millisecond}})
	startWorkers(t, s, js, "gw")
	if _, err := s.Enroller().Enroll(t.Context(), "m1"); err != nil { // enrolled, but no worker runs
		t.Fatal(err)
	}
	h := s.Handler()
	var run runs.Run
	if code := do(t, h, "POST", "/v1/rotations", `{"user":"alice"}`, &run); code != http.StatusAccepted {
		t.Fatalf("POST: %d", code)
	}
	v := waitFinished(t, js, h, run.ID)
	if v.State != runs.StateFailed || len(v.Results) != 2 || !v.Results[0].Success || v.Results[1].Success ||
		!strings.Contains(v.Results[1].Error, `"m1"`) {
		t.Fatalf("view = %+v", v)
	}
}

// A running rotation the next coordinator cannot resume (the inventory
// changed its plan) is ended: each planned step has a published result,
// the run fails, and the new password, which its tasks carried, is kept as
// uncommitted.
func TestResumeAbandoned(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	scripts := map[string]string{
		"u.sh":  "exit 0\n",
		"m.sh":  fmt.Sprintf("touch %[1]s/m.started\nwhile [ ! -e %[1]s/release ]; do sleep 0.05; done\n", dir),
		"m2.sh": "exit 0\n",
	}
	t.Cleanup(func() { _ = os.WriteFile(filepath.Join(dir, "release"), nil, 0o644) })
	js, _ := startBroker(t)
	_, run := stoppedMidScript(t, js, inventoryFor(t, scripts, "[{file: u.sh}]", "[{file: m.sh}]"), dir)
	s2 := startServer(t, js, inventoryFor(t, scripts, "[{file: u.sh}]", "[{file: m2.sh}]"), Options{})
	v := waitFinished(t, js, s2.Handler(), run.ID)
	if v.State != runs.StateFailed || v.Effect != string(rotation.EffectNotCommitted) || len(v.Results) != 2 ||
		!v.Results[0].Success || v.Results[1].Success || !strings.Contains(v.Results[1].Error, "cannot resume") {
		t.Fatalf("abandoned run: %+v", v)
	}
	e, err := s2.vault.Get(t.Context(), "alice")
	if err != nil {
		t.Fatal(err)
	}
	if e.Pending != nil || e.Password() != "a-old" || len(e.History) != 1 || e.History[0].Source != vault.SourceUncommitted || e.History[0].RotationID != run.ID {
		t.Fatalf("record after an abandoned rotation: pending %v, history %+v", e.Pending != nil, e.History)
	}
}
