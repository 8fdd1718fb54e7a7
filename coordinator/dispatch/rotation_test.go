package dispatch

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/postrotate/postrotate/coordinator/broker"
	"github.com/postrotate/postrotate/coordinator/broker/brokertest"
	"github.com/postrotate/postrotate/coordinator/inventory"
	"github.com/postrotate/postrotate/coordinator/plan"
	"github.com/postrotate/postrotate/coordinator/rotation"
	"github.com/postrotate/postrotate/executor"
	"github.com/postrotate/postrotate/executor/local"
	"github.com/postrotate/postrotate/messages"
	"github.com/postrotate/postrotate/messages/layout"
	"github.com/postrotate/postrotate/worker"
	"github.com/postrotate/postrotate/worker/workertest"
)

// account stands for the resource a built-in rotator changes: the worker's
// "rotate" executor in these tests. The real rotators are tested against a
// real sshd and PostgreSQL in executor/rotate; here what matters is what the
// dispatcher asks for and decides.
type account struct {
	mu       sync.Mutex
	password string
	calls    []executor.Rotation
	fail     map[int]bool // 1-based call numbers that fail
}

func (a *account) Run(_ context.Context, job executor.Job) (executor.Result, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.calls = append(a.calls, *job.Rotation)
	now := time.Now()
	res := executor.Result{System: "Linux", Command: "chpasswd", StartedAt: now, FinishedAt: now}
	switch {
	case a.fail[len(a.calls)]:
		res.ExitCode, res.Error = 1, "chpasswd: authentication token manipulation error"
	default:
		a.password = job.Rotation.NewPassword
		res.Stdout = "password of " + job.Rotation.Login + " changed\n"
	}
	return res, nil
}

func (a *account) state() (string, []executor.Rotation) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.password, append([]executor.Rotation(nil), a.calls...)
}

// engineCase starts a broker and a worker for host gw-1 whose rotate
// runner is acct, and plans the rotation of user u of inv (YAML).
func engineCase(t *testing.T, acct *account, inv string, scripts map[string]string) (*Dispatcher, *plan.Plan) {
	t.Helper()
	dir := t.TempDir()
	for name, content := range scripts {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "inv.yaml"), []byte(inv), 0o644); err != nil {
		t.Fatal(err)
	}
	loaded, err := inventory.Load(filepath.Join(dir, "inv.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	p, err := plan.New(loaded, "u")
	if err != nil {
		t.Fatal(err)
	}
	if err := p.CheckSupported(); err != nil {
		t.Fatal(err)
	}
	js, _ := brokertest.JetStream(t, broker.Options{StoreDir: filepath.Join(dir, "js")})
	var layout layout.Layout
	if err := layout.Setup(t.Context(), js); err != nil {
		t.Fatal(err)
	}
	if err := layout.EnsureHosts(t.Context(), js, p.Hosts()...); err != nil {
		t.Fatal(err)
	}
	w, err := worker.New(js, worker.Options{Host: "gw-1", FetchWait: time.Second, Executors: map[string]executor.Executor{
		messages.RunnerLocal:  local.New(local.Options{}),
		messages.RunnerRotate: acct,
	}})
	if err != nil {
		t.Fatal(err)
	}
	workertest.Start(t, w, 0)
	return New(js, Options{}), p
}

// engineInventory is a general rotation of u on machine m (whose worker is
// gw-1, also the gateway), with the user's scripts and extra fields on the
// user, the machine and the configuration.
func engineInventory(rotationType, userScripts, userFields, machineFields, configFields string) string {
	return fmt.Sprintf(`version: 1
records:
  - {uid: cfg, type: pamConfiguration, gateway: gw-1, fields: [%s]}
  - {uid: m, type: pamMachine, worker: gw-1, fields: [%s]}
  - uid: u
    type: pamUser
    fields: [{type: login, value: svc}, {type: password, value: old-pw}%s]
    rotation: {type: %s, resource: m, configuration: cfg}
    scripts: %s
`, configFields, machineFields, userFields, rotationType, userScripts)
}

// The scripts of these tests: one that succeeds, one that fails.
const okScript, failScript = "#!/bin/sh\ncat >/dev/null\necho ok\n", "#!/bin/sh\ncat >/dev/null\necho broken >&2\nexit 3\n"

type engineWant struct {
	names      []string // the steps run, by script name
	effect     rotation.Effect
	unresolved int
	success    bool
	password   string // the account's password after the rotation
}

func checkEngine(t *testing.T, out rotation.Outcome, err error, acct *account, w engineWant) {
	t.Helper()
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	var names []string
	for i, rr := range out.Results {
		names = append(names, rr.Name)
		if rr.Step != i+1 {
			t.Errorf("result %d has step %d", i, rr.Step)
		}
	}
	if strings.Join(names, ",") != strings.Join(w.names, ",") {
		t.Errorf("steps %q, want %q", names, w.names)
	}
	if out.Effect != w.effect || out.Unresolved != w.unresolved || out.Success() != w.success {
		t.Errorf("effect %s (%s), unresolved %d, success %v; want %s, %d, %v", out.Effect, out.Note, out.Unresolved, out.Success(), w.effect, w.unresolved, w.success)
	}
	if pw, _ := acct.state(); pw != w.password {
		t.Errorf("account password %q, want %q", pw, w.password)
	}
	for _, rr := range out.Results {
		if strings.Contains(fmt.Sprintf("%+v", rr), "new-pw") || strings.Contains(fmt.Sprintf("%+v", rr), "old-pw") {
			t.Errorf("result of %s holds a password: %+v", rr.Name, rr)
		}
	}
}

func runEngine(t *testing.T, d *Dispatcher, p *plan.Plan) (rotation.Outcome, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	return engine(d, 0).Run(ctx, rotation.Rotation{ID: rotation.NewID(), Plan: p, NewPassword: "new-pw", OldPassword: "old-pw"})
}

func TestEngineGeneralCommitted(t *testing.T) {
	t.Parallel()
	acct := &account{password: "old-pw"}
	d, p := engineCase(t, acct, engineInventory("general", "[{file: ok.sh}]", "", "", ""), map[string]string{"ok.sh": okScript})
	out, err := runEngine(t, d, p)
	checkEngine(t, out, err, acct, engineWant{names: []string{"rotate-linux", "ok.sh"}, effect: rotation.EffectCommitted, success: true, password: "new-pw"})
	if _, calls := acct.state(); len(calls) != 1 || calls[0].Login != "svc" || calls[0].Kind != "linux" || calls[0].NewPassword != "new-pw" || calls[0].OldPassword != "old-pw" {
		t.Errorf("rotator calls: %+v", calls)
	}
}

// A failed built-in rotation skips the scripts (they must not hear of a
// change that did not happen) and, by default, sets the old password back.
func TestEngineRotationFailsRollsBack(t *testing.T) {
	t.Parallel()
	acct := &account{password: "old-pw", fail: map[int]bool{1: true}}
	d, p := engineCase(t, acct, engineInventory("general", "[{file: ok.sh}]", "", "", ""), map[string]string{"ok.sh": okScript})
	out, err := runEngine(t, d, p)
	checkEngine(t, out, err, acct, engineWant{names: []string{"rotate-linux", "ok.sh", "rollback-linux"}, effect: rotation.EffectRolledBack, unresolved: 1, password: "old-pw"})
	if r := out.Results[1]; r.Success || !strings.Contains(r.Error, "password rotation (step 1) failed") {
		t.Errorf("script result %+v: want skipped", r)
	}
	if _, calls := acct.state(); len(calls) != 2 || calls[1].NewPassword != "old-pw" || calls[1].OldPassword != "new-pw" {
		t.Errorf("rollback call: %+v", calls)
	}
}

// Rollback On Password Fail off (set on the configuration): no rollback,
// nothing committed.
func TestEngineRotationFailsNoRollback(t *testing.T) {
	t.Parallel()
	acct := &account{password: "old-pw", fail: map[int]bool{1: true}}
	inv := engineInventory("general", "[{file: ok.sh}]", "", "", `{type: checkbox, label: Rollback On Password Fail, value: false}`)
	d, p := engineCase(t, acct, inv, map[string]string{"ok.sh": okScript})
	out, err := runEngine(t, d, p)
	checkEngine(t, out, err, acct, engineWant{names: []string{"rotate-linux", "ok.sh"}, effect: rotation.EffectNotCommitted, unresolved: 1, password: "old-pw"})
}

// A failed script after a successful rotation: by default the new password
// stays (committed) and the rotation is reported failed.
func TestEngineScriptFailsCommitted(t *testing.T) {
	t.Parallel()
	acct := &account{password: "old-pw"}
	d, p := engineCase(t, acct, engineInventory("general", "[{file: fail.sh}, {file: ok.sh}]", "", "", ""), map[string]string{"ok.sh": okScript, "fail.sh": failScript})
	out, err := runEngine(t, d, p)
	checkEngine(t, out, err, acct, engineWant{names: []string{"rotate-linux", "fail.sh", "ok.sh"}, effect: rotation.EffectCommitted, unresolved: 1, password: "new-pw"})
}

// Rollback On Post Rotation Fail (on the resource; the user says nothing).
func TestEngineScriptFailsRollsBack(t *testing.T) {
	t.Parallel()
	acct := &account{password: "old-pw"}
	inv := engineInventory("general", "[{file: fail.sh}]", "", `{type: text, label: Rollback On Post Rotation Fail, value: "True"}`, "")
	d, p := engineCase(t, acct, inv, map[string]string{"fail.sh": failScript})
	out, err := runEngine(t, d, p)
	checkEngine(t, out, err, acct, engineWant{names: []string{"rotate-linux", "fail.sh", "rollback-linux"}, effect: rotation.EffectRolledBack, unresolved: 1, password: "old-pw"})
}

// The user's switch wins over the configuration's.
func TestEngineUserSwitchWins(t *testing.T) {
	t.Parallel()
	acct := &account{password: "old-pw"}
	inv := engineInventory("general", "[{file: fail.sh}]", `, {type: checkbox, label: Rollback On Post Rotation Fail, value: false}`, "",
		`{type: checkbox, label: Rollback On Post Rotation Fail, value: true}`)
	d, p := engineCase(t, acct, inv, map[string]string{"fail.sh": failScript})
	out, err := runEngine(t, d, p)
	checkEngine(t, out, err, acct, engineWant{names: []string{"rotate-linux", "fail.sh"}, effect: rotation.EffectCommitted, unresolved: 1, password: "new-pw"})
}

// Re-run On Post Rotation Fail: a script that fails once and then succeeds
// leaves nothing unresolved.
func TestEngineRerun(t *testing.T) {
	t.Parallel()
	acct := &account{password: "old-pw"}
	marker := filepath.Join(t.TempDir(), "ran-once")
	flaky := fmt.Sprintf("#!/bin/sh\ncat >/dev/null\nif [ -e %[1]s ]; then echo second; exit 0; fi\ntouch %[1]s\nexit 5\n", marker)
	inv := engineInventory("general", "[{file: flaky.sh}, {file: fail.sh}]", `, {type: checkbox, label: Re-run On Post Rotation Fail, value: true}`, "", "")
	d, p := engineCase(t, acct, inv, map[string]string{"flaky.sh": flaky, "fail.sh": failScript})
	out, err := runEngine(t, d, p)
	checkEngine(t, out, err, acct, engineWant{names: []string{"rotate-linux", "flaky.sh", "fail.sh", "flaky.sh", "fail.sh"}, effect: rotation.EffectCommitted, unresolved: 1, password: "new-pw"})
	if r := out.Results[3]; !r.Success || !strings.HasSuffix(r.Title, "(re-run)") || r.Stdout != "second\n" {
		t.Errorf("re-run result: %+v", r)
	}
}

// A rollback that fails leaves the outcome rollback_failed: a person must
// look.
func TestEngineRollbackFails(t *testing.T) {
	t.Parallel()
	acct := &account{password: "old-pw", fail: map[int]bool{2: true}}
	inv := engineInventory("general", "[{file: fail.sh}]", `, {type: checkbox, label: Rollback On Post Rotation Fail, value: true}`, "", "")
	d, p := engineCase(t, acct, inv, map[string]string{"fail.sh": failScript})
	out, err := runEngine(t, d, p)
	checkEngine(t, out, err, acct, engineWant{names: []string{"rotate-linux", "fail.sh", "rollback-linux"}, effect: rotation.EffectRollbackFailed, unresolved: 2, password: "new-pw"})
}

// scripts_only: no rotator runs; a failed script means the rotation did
// not take effect.
func TestEngineScriptsOnly(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		script string
		effect rotation.Effect
	}{{"ok.sh", rotation.EffectCommitted}, {"fail.sh", rotation.EffectNotCommitted}} {
		acct := &account{password: "old-pw"}
		d, p := engineCase(t, acct, engineInventory("scripts_only", "[{file: "+tc.script+"}]", "", "", ""), map[string]string{"ok.sh": okScript, "fail.sh": failScript})
		out, err := runEngine(t, d, p)
		unresolved := 0
		if tc.effect != rotation.EffectCommitted {
			unresolved = 1
		}
		checkEngine(t, out, err, acct, engineWant{names: []string{tc.script}, effect: tc.effect, unresolved: unresolved, success: tc.effect == rotation.EffectCommitted, password: "old-pw"})
	}
}
