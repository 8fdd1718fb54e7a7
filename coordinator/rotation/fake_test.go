package rotation

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/postrotate/postrotate/coordinator/inventory"
	"github.com/postrotate/postrotate/coordinator/plan"
	"github.com/postrotate/postrotate/messages"
)

// fakeRunner is a StepRunner without a broker: each task "runs" at once
// with the outcome its kind is given (ok, failed, in_doubt).
type fakeRunner struct {
	mu sync.Mutex
	// builtin, rollback, script and rerun are the outcomes of the
	// built-in rotation, the rollback, a script's first run and its
	// re-run. Empty means ok.
	builtin, rollback, script, rerun string
	// cut, when > 0, is the Send (1-based) that finds the runner gone:
	// it returns an error, as when JetStream stops answering.
	cut int
	// beginErr, when set, is what Begin returns.
	beginErr error

	sends     int
	tasks     []messages.Task
	published map[int]messages.RotationResult // by step
	events    []messages.RotationEvent
	begun     int
	ended     int
}

var errGone = errors.New("jetstream not answering")

func (f *fakeRunner) Begin(context.Context, string) (func(), error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.beginErr != nil {
		return nil, f.beginErr
	}
	f.begun++
	return func() { f.mu.Lock(); f.ended++; f.mu.Unlock() }, nil
}

func (f *fakeRunner) Send(_ context.Context, task messages.Task) (messages.RotationResult, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sends++
	if f.sends == f.cut {
		return messages.RotationResult{}, true, errGone
	}
	f.tasks = append(f.tasks, task)
	outcome := f.script
	switch {
	case task.Rotation != nil && task.Rotation.Rollback:
		outcome = f.rollback
	case task.Rotation != nil:
		outcome = f.builtin
	case strings.HasSuffix(task.Script.Title, "(re-run)"):
		outcome = f.rerun
	}
	rr := messages.RotationResult{
		UID: task.RecordUID, Title: task.Script.Title, Name: task.Script.Name, RotationID: task.RotationID,
		Step: task.Step, Host: task.Host, Success: outcome == "" || outcome == "ok",
	}
	switch outcome {
	case "failed":
		rr.ExitCode, rr.Stderr = 3, "broken"
	case "in_doubt":
		rr.ExitCode, rr.Error = -1, `in doubt: interrupted: the script was started by worker "w0"`
	}
	f.publish(rr)
	return rr, true, nil
}

func (f *fakeRunner) publish(rr messages.RotationResult) {
	if f.published == nil {
		f.published = map[int]messages.RotationResult{}
	}
	if _, ok := f.published[rr.Step]; !ok { // first result wins
		f.published[rr.Step] = rr
	}
}

func (f *fakeRunner) Report(_ context.Context, rr messages.RotationResult) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.publish(rr)
	return nil
}

func (f *fakeRunner) Result(_ context.Context, _ string, step int) (messages.RotationResult, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	rr, ok := f.published[step]
	return rr, ok, nil
}

func (f *fakeRunner) Announce(_ context.Context, ev messages.RotationEvent) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.events = append(f.events, ev)
}

// policyPlan plans the rotation of user u: mode general (a Linux account
// on machine m), scripts_only, or noop (general with a NOOP field), with
// one script s.sh, the three Keeper switches on the user, and
// stop_on_failure when stop.
func policyPlan(t *testing.T, mode string, rbPass, rbPost, rerun bool, scripts string, stop bool) *plan.Plan {
	t.Helper()
	dir := t.TempDir()
	for _, name := range []string{"s.sh", "t.sh"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("#!/bin/sh\necho ok\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	kind, extra := mode, ""
	switch mode {
	case "noop":
		kind, extra = "general", "\n      - {type: text, label: NOOP, value: \"True\"}"
	case "general":
		kind = "general"
	}
	y := fmt.Sprintf(`version: 1
records:
  - {uid: cfg, type: pamConfiguration, gateway: gw}
  - {uid: m, type: pamMachine, worker: gw}
  - uid: u
    type: pamUser
    fields:
      - {type: login, value: svc}
      - {type: password, value: old-pw}
      - {type: checkbox, label: Rollback On Password Fail, value: %t}
      - {type: checkbox, label: Rollback On Post Rotation Fail, value: %t}
      - {type: checkbox, label: Re-run On Post Rotation Fail, value: %t}%s
    rotation: {type: %s, resource: m, configuration: cfg, stop_on_failure: %t}
    scripts: %s
`, rbPass, rbPost, rerun, extra, kind, stop, scripts)
	inv, err := inventory.Parse([]byte(y), dir)
	if err != nil {
		t.Fatal(err)
	}
	p, err := plan.New(inv, "u")
	if err != nil {
		t.Fatal(err)
	}
	if err := p.CheckSupported(); err != nil {
		t.Fatal(err)
	}
	return p
}

// stepsOf describes the results of out as "kind=outcome ..." (kinds
// rotate, script, rerun, rollback; outcomes ok, failed, in_doubt,
// skipped).
func stepsOf(out Outcome) string {
	var parts []string
	for _, rr := range out.Results {
		kind := "script"
		switch {
		case strings.HasPrefix(rr.Name, "rotate-"):
			kind = "rotate"
		case strings.HasPrefix(rr.Name, "rollback-"):
			kind = "rollback"
		case strings.HasSuffix(rr.Title, "(re-run)"):
			kind = "rerun"
		}
		outcome := "ok"
		switch {
		case strings.HasPrefix(rr.Error, "not run:"):
			outcome = "skipped"
		case strings.HasPrefix(rr.Error, "in doubt:"):
			outcome = "in_doubt"
		case !rr.Success:
			outcome = "failed"
		}
		parts = append(parts, kind+"="+outcome)
	}
	return strings.Join(parts, " ")
}

// messagesResult is the published result of step of rotation "rot".
func messagesResult(step int, ok bool) messages.RotationResult {
	return messages.RotationResult{RotationID: "rot", Step: step, Success: ok}
}
