package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/postrotate/postrotate/coordinator/rotation"
	"github.com/postrotate/postrotate/coordinator/runs"
	"github.com/postrotate/postrotate/coordinator/server"
	"github.com/postrotate/postrotate/messages"
	"github.com/postrotate/postrotate/worker/workertest"
)

// deployment is a serve process with its inventory, data and addresses.
type deployment struct {
	t         *testing.T
	dir       string
	natsURL   string
	api       api
	serve     *proc
	serveArgs []string
}

// The inventory: alice's scripts run on the gateway gw (user, then
// configuration) and on the machine m1 (its own worker), in that order.
const inventoryYAML = `version: 1
records:
  - {uid: cfg, type: pamConfiguration, gateway: gw, scripts: [{file: c.sh, timeout: 20s}]}
  - {uid: m1, type: pamMachine, worker: m1, scripts: [{file: m.sh, timeout: 60s}]}
  - uid: alice
    type: pamUser
    fields: [{type: login, value: alice}, {type: password, value: Marker-E2E-0ld-9d1c}]
    rotation: {type: scripts_only, resource: m1, configuration: cfg}
    scripts: [{file: u.sh, timeout: 20s}]
`

// deploy writes the inventory and scripts and starts `postrotate serve`.
// The machine script m.sh logs its run, marks that it started, and waits
// for the file "release" when the test creates "hold" first.
func deploy(t *testing.T, serveArgs ...string) *deployment {
	t.Helper()
	return deployFiles(t, nil, false, serveArgs...)
}

// deployFiles is deploy with some files replaced (each function of files
// returns a file's content given the deployment's directory) and, with
// enrolled, serve admitting only enrolled workers (see enrolledWorker).
func deployFiles(t *testing.T, files map[string]func(dir string) string, enrolled bool, serveArgs ...string) *deployment {
	t.Helper()
	dir := t.TempDir()
	count := filepath.Join(dir, "count")
	scripts := map[string]string{
		"u.sh":           "echo u >> " + count + "\necho user on $POSTROTATE_STEP\n",
		"m.sh":           fmt.Sprintf("echo m >> %[1]s\ntouch %[2]s/m.started\nif [ -e %[2]s/hold ]; then while [ ! -e %[2]s/release ]; do sleep 0.05; done; fi\necho machine done\n", count, dir),
		"c.sh":           "echo c >> " + count + "\n",
		"inventory.yaml": inventoryYAML,
	}
	for name, content := range files {
		scripts[name] = content(dir)
	}
	for name, content := range scripts {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	d := &deployment{t: t, dir: dir}
	httpAddr := freeAddr(t)
	d.api = api{t: t, base: "http://" + httpAddr}
	d.serveArgs = []string{"serve", "--inventory", filepath.Join(dir, "inventory.yaml"), "--data", filepath.Join(dir, "data"),
		"--http", httpAddr, "--log-level", "debug"}
	if !enrolled {
		// The workers run without credentials (--host --nats): serve takes
		// them with --insecure-workers.
		d.serveArgs = append(d.serveArgs, "--insecure-workers")
	}
	d.serveArgs = append(d.serveArgs, serveArgs...)
	if !strings.Contains(strings.Join(serveArgs, " "), "--nats ") {
		natsAddr := freeAddr(t)
		d.natsURL = "nats://" + natsAddr
		d.serveArgs = append(d.serveArgs, "--nats-listen", natsAddr)
	}
	d.startServe()
	return d
}

func (d *deployment) startServe() {
	d.serve = start(d.t, "serve", bins.postrotate, d.serveArgs...)
	d.api.waitUp()
}

func (d *deployment) worker(host, name string) *proc {
	p := start(d.t, "worker "+name, bins.worker, "--host", host, "--name", name, "--nats", d.natsURL, "--log-level", "debug")
	p.waitLog("worker started")
	return p
}

func (d *deployment) rotate(user string) runs.Run {
	d.t.Helper()
	var run runs.Run
	if code := d.api.do("POST", "/v1/rotations", map[string]string{"user": user}, &run); code != http.StatusAccepted {
		d.t.Fatalf("POST /v1/rotations: %d", code)
	}
	return run
}

// wait waits until the API reports rotation id finished and returns it.
func (d *deployment) wait(id string) rotation.View {
	d.t.Helper()
	var v rotation.View
	workertest.Eventually(d.t, 2*time.Minute, "rotation "+id+" finished", func() bool {
		v = rotation.View{}
		return d.api.do("GET", "/v1/rotations/"+id, nil, &v) == http.StatusOK && v.Finished()
	})
	return v
}

// ran returns the scripts that ran, in order.
func (d *deployment) ran() string {
	data, _ := os.ReadFile(filepath.Join(d.dir, "count"))
	return strings.Join(strings.Fields(string(data)), ",")
}

// checkNoSecret fails when the old password reached a process's logs.
func checkNoSecret(t *testing.T, ps ...*proc) {
	t.Helper()
	for _, p := range ps {
		if strings.Contains(p.logs.String(), "Marker-E2E-0ld-9d1c") {
			t.Errorf("the marker password reached the logs of %s", p.name)
		}
	}
}

// A rotation runs its scripts on the gateway's and the machine's worker
// processes, in order, and every result names its host and worker.
func TestServeWithGatewayAndMachineWorkers(t *testing.T) {
	t.Parallel()
	d := deploy(t)
	gw := d.worker("gw", "gw-a")
	m1 := d.worker("m1", "m1-a")
	v := d.wait(d.rotate("alice").ID)
	if v.State != runs.StateCompleted || len(v.Results) != 3 {
		t.Fatalf("rotation: %+v", v)
	}
	checkResultWorkers(t, v, [][2]string{{"gw", "gw-a"}, {"m1", "m1-a"}, {"gw", "gw-a"}})
	if got := d.ran(); got != "u,m,c" {
		t.Fatalf("ran %s", got)
	}
	var workers []map[string]any
	if code := d.api.do("GET", "/v1/workers", nil, &workers); code != http.StatusOK || len(workers) != 2 {
		t.Errorf("GET /v1/workers: %d %v", code, workers)
	}
	checkNoSecret(t, d.serve, gw, m1)
	checkRotateClient(t, d)
}

// checkResultWorkers checks that every result of v succeeded on the host
// and worker of want, in order.
func checkResultWorkers(t *testing.T, v rotation.View, want [][2]string) {
	t.Helper()
	for i, r := range v.Results {
		if r.Host != want[i][0] || r.Worker != want[i][1] || !r.Success {
			t.Errorf("result %d: host %s worker %s success %v, want %v", i+1, r.Host, r.Worker, r.Success, want[i])
		}
	}
}

// checkRotateClient checks the command-line client `rotate --server`: same
// output and exit codes as one-shot mode.
func checkRotateClient(t *testing.T, d *deployment) {
	t.Helper()
	out, err := exec.Command(bins.postrotate, "rotate", "--server", d.api.base, "--user", "alice", "--wait", "--json").Output()
	if err != nil {
		t.Fatalf("rotate --server --wait: %v\n%s", err, out)
	}
	var results []messages.RotationResult
	if err := json.Unmarshal(out, &results); err != nil || len(results) != 3 || !results[2].Success {
		t.Fatalf("rotate --server --wait --json: %v\n%s", err, out)
	}
	cmd := exec.Command(bins.postrotate, "rotate", "--server", d.api.base, "--user", "nobody")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Run(); cmd.ProcessState.ExitCode() != 2 || !strings.Contains(stderr.String(), "nobody") {
		t.Fatalf("rotate --server of an unknown user: %v, stderr %q", err, stderr.String())
	}
}

// serve killed with SIGKILL mid-rotation: restarted, it resumes the
// rotation, which completes; no script runs twice.
func TestServeKilledMidRotation(t *testing.T) {
	t.Parallel()
	d := deploy(t)
	d.worker("gw", "gw-a")
	d.worker("m1", "m1-a")
	touch(t, filepath.Join(d.dir, "hold"))
	run := d.rotate("alice")
	waitFile(t, filepath.Join(d.dir, "m.started"))
	d.serve.kill()
	d.startServe()
	touch(t, filepath.Join(d.dir, "release"))
	v := d.wait(run.ID)
	if v.State != runs.StateCompleted || len(v.Results) != 3 {
		t.Fatalf("resumed rotation: %+v", v)
	}
	if got := d.ran(); got != "u,m,c" {
		t.Fatalf("ran %s, want each script once", got)
	}
	var list []runs.Run
	if d.api.do("GET", "/v1/rotations?user=alice", nil, &list); len(list) != 1 || list[0].ID != run.ID {
		t.Fatalf("runs after restart: %+v", list)
	}
}

// A worker killed with SIGKILL mid-script: the redelivered task is not run
// again but reported in doubt; later rotations work once a worker returns.
func TestWorkerKilledMidScript(t *testing.T) {
	t.Parallel()
	d := deploy(t, "--ack-wait", "2s", "--pinned-ttl", "2s")
	d.worker("gw", "gw-a")
	m1 := d.worker("m1", "m1-a")
	touch(t, filepath.Join(d.dir, "hold"))
	run := d.rotate("alice")
	waitFile(t, filepath.Join(d.dir, "m.started"))
	m1.killProcess()
	d.worker("m1", "m1-b")
	v := d.wait(run.ID)
	touch(t, filepath.Join(d.dir, "release")) // let the orphaned script end
	if v.State != runs.StateFailed || len(v.Results) != 3 {
		t.Fatalf("rotation: %+v", v)
	}
	if r := v.Results[1]; r.Success || !strings.Contains(r.Error, "in doubt") || r.Worker != "m1-b" {
		t.Fatalf("interrupted step: %+v", r)
	}
	if !v.Results[2].Success {
		t.Fatalf("the step after the interrupted one: %+v", v.Results[2])
	}
	if got := d.ran(); got != "u,m,c" {
		t.Fatalf("ran %s: the interrupted script must not run twice", got)
	}
	// The host works again for the next rotation.
	v = d.wait(d.rotate("alice").ID)
	if v.State != runs.StateCompleted {
		t.Fatalf("next rotation: %+v", v)
	}
}

// SIGTERM during a script: the worker finishes the script, reports it, and
// exits 0.
func TestWorkerSIGTERMDuringScript(t *testing.T) {
	t.Parallel()
	d := deploy(t)
	d.worker("gw", "gw-a")
	m1 := d.worker("m1", "m1-a")
	touch(t, filepath.Join(d.dir, "hold"))
	run := d.rotate("alice")
	waitFile(t, filepath.Join(d.dir, "m.started"))
	m1.signal(syscall.SIGTERM)
	m1.waitLog("stopping: finishing the running script")
	select {
	case <-m1.exited:
		t.Fatal("worker exited while its script was running")
	case <-time.After(300 * time.Millisecond):
	}
	touch(t, filepath.Join(d.dir, "release"))
	if err := m1.waitExit(30 * time.Second); err != nil {
		t.Fatalf("worker exit: %v", err)
	}
	v := d.wait(run.ID)
	if v.State != runs.StateCompleted || v.Results[1].Stdout != "machine done\n" {
		t.Fatalf("rotation: %+v", v)
	}
}

// A host without a live worker: its step fails at the deadline with an
// error naming the host; the other steps run; nothing hangs.
func TestOfflineHost(t *testing.T) {
	t.Parallel()
	d := deploy(t, "--pickup-timeout", "1s")
	d.worker("gw", "gw-a")
	v := d.wait(d.rotate("alice").ID)
	if v.State != runs.StateFailed || len(v.Results) != 3 || !strings.Contains(v.Results[1].Error, `"m1"`) ||
		!v.Results[0].Success || !v.Results[2].Success {
		t.Fatalf("rotation: %+v", v)
	}
}

// Undecodable tasks are terminated, never redelivered, and do not block
// the host's queue.
func TestUndecodableTask(t *testing.T) {
	t.Parallel()
	d := deploy(t)
	d.worker("gw", "gw-a")
	m1 := d.worker("m1", "m1-a")
	nc, err := nats.Connect(d.natsURL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, garbage := range []string{"\x00\xff not json", `{"schema_version":1,"rotation_id":"forged","step":1}`} {
		if _, err := js.Publish(ctx, "postrotate.tasks.m1", []byte(garbage)); err != nil {
			t.Fatal(err)
		}
	}
	m1.waitLog("invalid task terminated")
	v := d.wait(d.rotate("alice").ID)
	if v.State != runs.StateCompleted {
		t.Fatalf("rotation after the invalid tasks: %+v", v)
	}
	s, err := js.Stream(ctx, "POSTROTATE_TASKS")
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 0 {
		t.Fatalf("%d messages left in the task queue", info.State.Msgs)
	}
}

// serve against an external nats-server (go tool nats-server) works as with
// the embedded one.
func TestExternalNATS(t *testing.T) {
	t.Parallel()
	addr := freeAddr(t)
	host, port, _ := strings.Cut(addr, ":")
	ns := start(t, "nats-server", bins.natsServer, "-js", "-sd", t.TempDir(), "-a", host, "-p", port)
	ns.waitLog("Server is ready")
	d := deploy(t, "--nats", "nats://"+addr)
	d.natsURL = "nats://" + addr
	d.worker("gw", "gw-a")
	d.worker("m1", "m1-a")
	v := d.wait(d.rotate("alice").ID)
	if v.State != runs.StateCompleted || len(v.Results) != 3 {
		t.Fatalf("rotation: %+v", v)
	}
}

// Two workers started for one host: one receives the host's tasks (the
// pinned client); when it dies, the other takes over.
func TestTwoWorkersForOneHost(t *testing.T) {
	t.Parallel()
	d := deploy(t, "--pinned-ttl", "2s")
	d.worker("gw", "gw-a")
	a := d.worker("m1", "m1-a")
	b := d.worker("m1", "m1-b")
	seen := map[string]int{}
	for range 4 {
		v := d.wait(d.rotate("alice").ID)
		if v.State != runs.StateCompleted {
			t.Fatalf("rotation: %+v", v)
		}
		seen[v.Results[1].Worker]++
	}
	if len(seen) != 1 {
		t.Fatalf("the tasks of m1 went to several workers: %v", seen)
	}
	pinned, other := a, b
	if seen["m1-b"] > 0 {
		pinned, other = b, a
	}
	pinned.killProcess()
	v := d.wait(d.rotate("alice").ID)
	if v.State != runs.StateCompleted || !strings.HasSuffix(other.name, v.Results[1].Worker) {
		t.Fatalf("after the pinned worker died: %+v (other is %s)", v, other.name)
	}
	if got := strings.Count(d.ran(), "m"); got != 5 {
		t.Fatalf("machine script ran %d times, want 5", got)
	}
}

// serve keeps the rotated password in its record store: `records get
// --reveal` shows it, nothing under --data holds it (or the inventory's
// password) in plaintext, and serve refuses to start with another key.
func TestServeRecordStore(t *testing.T) {
	t.Parallel()
	d := deploy(t)
	d.worker("gw", "gw-a")
	d.worker("m1", "m1-a")
	v := d.wait(d.rotate("alice").ID)
	if v.State != runs.StateCompleted || v.Effect != "committed" {
		t.Fatalf("rotation: %+v", v)
	}
	newPassword := checkRecordsClient(t, d)

	d.serve.signal(syscall.SIGTERM)
	if err := d.serve.waitExit(30 * time.Second); err != nil {
		t.Fatalf("serve exit: %v", err)
	}
	checkNoSecret(t, d.serve)
	if files := checkTreeNoSecret(t, filepath.Join(d.dir, "data"), secretForms(map[string]string{"old password": markerOld, "new password": newPassword})); files < 5 {
		t.Fatalf("walk data: %d files", files)
	}
	checkServeRefusesOtherKey(t, d)
}

// checkRecordsClient checks alice's record as the command-line client
// shows it after one rotation, revealed, masked and in the list; it
// returns the revealed new password.
func checkRecordsClient(t *testing.T, d *deployment) string {
	t.Helper()
	newPassword := checkRevealedRecord(t, d)
	out, err := exec.Command(bins.postrotate, "records", "get", "alice", "--server", d.api.base).Output()
	if err != nil || strings.Contains(string(out), newPassword) || strings.Contains(string(out), "Marker-E2E") || !strings.Contains(string(out), "********") {
		t.Fatalf("records get without --reveal: %v\n%s", err, out)
	}
	out, err = exec.Command(bins.postrotate, "records", "list", "--server", d.api.base).Output()
	if err != nil || !strings.Contains(string(out), "alice") || !strings.Contains(string(out), "rotation") {
		t.Fatalf("records list: %v\n%s", err, out)
	}
	return newPassword
}

// checkRevealedRecord checks alice's record as `records get --reveal`
// shows it after one rotation: the rotation's password, the inventory's in
// the history. It returns the new password.
func checkRevealedRecord(t *testing.T, d *deployment) string {
	t.Helper()
	var rec server.RecordView
	out, err := exec.Command(bins.postrotate, "records", "get", "alice", "--server", d.api.base, "--reveal", "--json").Output()
	if err != nil || json.Unmarshal(out, &rec) != nil {
		t.Fatalf("records get --reveal: %v\n%s", err, out)
	}
	if rec.Source != "rotation" || len(rec.Password) < 16 || len(rec.History) != 1 || rec.History[0].Password != "Marker-E2E-0ld-9d1c" {
		t.Fatalf("record: %+v", rec)
	}
	return rec.Password
}

// checkServeRefusesOtherKey starts serve on d's data directory with
// another key: it is refused, saying why.
func checkServeRefusesOtherKey(t *testing.T, d *deployment) {
	t.Helper()
	args := append(slices.Clone(d.serveArgs), "--key-file", filepath.Join(d.dir, "other.key"))
	p := start(t, "serve-other-key", bins.postrotate, args...)
	if err := p.waitExit(30 * time.Second); err == nil || !strings.Contains(p.logs.String(), "is not the key the data directory") {
		t.Fatalf("serve with another key: %v\n%s", err, p.logs.String())
	}
}
