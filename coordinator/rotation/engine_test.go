package rotation

import (
	"errors"
	"testing"

	"github.com/postrotate/postrotate/coordinator/plan"
)

// runFake runs the rotation of p through f.
func runFake(t *testing.T, f *fakeRunner, p *plan.Plan) (Outcome, error) {
	t.Helper()
	return NewEngine(f, EngineOptions{}).Run(t.Context(), Rotation{ID: NewID(), Plan: p, NewPassword: "new-pw", OldPassword: "old-pw"})
}

// policyCase is one row of the policy: the mode, the outcomes of the
// built-in rotation and the script, the three switches, and what the
// engine must end with.
type policyCase struct {
	mode, builtin, script string
	rbPass, rbPost, rerun bool
	steps                 string
	effect                Effect
	unresolved            int
	mayHaveChanged        bool
}

// name names the row in failure messages.
func (tc policyCase) name() string { return tc.mode + "/" + tc.builtin + "/" + tc.script }

// policyCases is the engine's policy, Keeper's rules: every mode
// (general, scripts_only, a NOOP user) × the built-in rotation ok or
// failed × the script ok, failed or in doubt × the three switches
// (Rollback On Password Fail, Rollback On Post Rotation Fail, Re-run On
// Post Rotation Fail). A re-run ends as the first run did; a rollback
// succeeds.
var policyCases = []policyCase{
	{"general", "ok", "ok", true, true, true, "rotate=ok script=ok", "committed", 0, false},
	{"general", "ok", "ok", true, true, false, "rotate=ok script=ok", "committed", 0, false},
	{"general", "ok", "ok", true, false, true, "rotate=ok script=ok", "committed", 0, false},
	{"general", "ok", "ok", true, false, false, "rotate=ok script=ok", "committed", 0, false},
	{"general", "ok", "ok", false, true, true, "rotate=ok script=ok", "committed", 0, false},
	{"general", "ok", "ok", false, true, false, "rotate=ok script=ok", "committed", 0, false},
	{"general", "ok", "ok", false, false, true, "rotate=ok script=ok", "committed", 0, false},
	{"general", "ok", "ok", false, false, false, "rotate=ok script=ok", "committed", 0, false},
	{"general", "ok", "failed", true, true, true, "rotate=ok script=failed rerun=failed rollback=ok", "rolled_back", 1, false},
	{"general", "ok", "failed", true, true, false, "rotate=ok script=failed rollback=ok", "rolled_back", 1, false},
	{"general", "ok", "failed", true, false, true, "rotate=ok script=failed rerun=failed", "committed", 1, false},
	{"general", "ok", "failed", true, false, false, "rotate=ok script=failed", "committed", 1, false},
	{"general", "ok", "failed", false, true, true, "rotate=ok script=failed rerun=failed rollback=ok", "rolled_back", 1, false},
	{"general", "ok", "failed", false, true, false, "rotate=ok script=failed rollback=ok", "rolled_back", 1, false},
	{"general", "ok", "failed", false, false, true, "rotate=ok script=failed rerun=failed", "committed", 1, false},
	{"general", "ok", "failed", false, false, false, "rotate=ok script=failed", "committed", 1, false},
	{"general", "ok", "in_doubt", true, true, true, "rotate=ok script=in_doubt rerun=in_doubt rollback=ok", "rolled_back", 1, false},
	{"general", "ok", "in_doubt", true, true, false, "rotate=ok script=in_doubt rollback=ok", "rolled_back", 1, false},
	{"general", "ok", "in_doubt", true, false, true, "rotate=ok script=in_doubt rerun=in_doubt", "committed", 1, false},
	{"general", "ok", "in_doubt", true, false, false, "rotate=ok script=in_doubt", "committed", 1, false},
	{"general", "ok", "in_doubt", false, true, true, "rotate=ok script=in_doubt rerun=in_doubt rollback=ok", "rolled_back", 1, false},
	{"general", "ok", "in_doubt", false, true, false, "rotate=ok script=in_doubt rollback=ok", "rolled_back", 1, false},
	{"general", "ok", "in_doubt", false, false, true, "rotate=ok script=in_doubt rerun=in_doubt", "committed", 1, false},
	{"general", "ok", "in_doubt", false, false, false, "rotate=ok script=in_doubt", "committed", 1, false},
	{"general", "failed", "ok", true, true, true, "rotate=failed script=skipped rollback=ok", "rolled_back", 1, false},
	{"general", "failed", "ok", true, true, false, "rotate=failed script=skipped rollback=ok", "rolled_back", 1, false},
	{"general", "failed", "ok", true, false, true, "rotate=failed script=skipped rollback=ok", "rolled_back", 1, false},
	{"general", "failed", "ok", true, false, false, "rotate=failed script=skipped rollback=ok", "rolled_back", 1, false},
	{"general", "failed", "ok", false, true, true, "rotate=failed script=skipped", "not_committed", 1, true},
	{"general", "failed", "ok", false, true, false, "rotate=failed script=skipped", "not_committed", 1, true},
	{"general", "failed", "ok", false, false, true, "rotate=failed script=skipped", "not_committed", 1, true},
	{"general", "failed", "ok", false, false, false, "rotate=failed script=skipped", "not_committed", 1, true},
	{"general", "failed", "failed", true, true, true, "rotate=failed script=skipped rollback=ok", "rolled_back", 1, false},
	{"general", "failed", "failed", true, true, false, "rotate=failed script=skipped rollback=ok", "rolled_back", 1, false},
	{"general", "failed", "failed", true, false, true, "rotate=failed script=skipped rollback=ok", "rolled_back", 1, false},
	{"general", "failed", "failed", true, false, false, "rotate=failed script=skipped rollback=ok", "rolled_back", 1, false},
	{"general", "failed", "failed", false, true, true, "rotate=failed script=skipped", "not_committed", 1, true},
	{"general", "failed", "failed", false, true, false, "rotate=failed script=skipped", "not_committed", 1, true},
	{"general", "failed", "failed", false, false, true, "rotate=failed script=skipped", "not_committed", 1, true},
	{"general", "failed", "failed", false, false, false, "rotate=failed script=skipped", "not_committed", 1, true},
	{"general", "failed", "in_doubt", true, true, true, "rotate=failed script=skipped rollback=ok", "rolled_back", 1, false},
	{"general", "failed", "in_doubt", true, true, false, "rotate=failed script=skipped rollback=ok", "rolled_back", 1, false},
	{"general", "failed", "in_doubt", true, false, true, "rotate=failed script=skipped rollback=ok", "rolled_back", 1, false},
	{"general", "failed", "in_doubt", true, false, false, "rotate=failed script=skipped rollback=ok", "rolled_back", 1, false},
	{"general", "failed", "in_doubt", false, true, true, "rotate=failed script=skipped", "not_committed", 1, true},
	{"general", "failed", "in_doubt", false, true, false, "rotate=failed script=skipped", "not_committed", 1, true},
	{"general", "failed", "in_doubt", false, false, true, "rotate=failed script=skipped", "not_committed", 1, true},
	{"general", "failed", "in_doubt", false, false, false, "rotate=failed script=skipped", "not_committed", 1, true},
	{"scripts_only", "-", "ok", true, true, true, "script=ok", "committed", 0, false},
	{"scripts_only", "-", "ok", true, true, false, "script=ok", "committed", 0, false},
	{"scripts_only", "-", "ok", true, false, true, "script=ok", "committed", 0, false},
	{"scripts_only", "-", "ok", true, false, false, "script=ok", "committed", 0, false},
	{"scripts_only", "-", "ok", false, true, true, "script=ok", "committed", 0, false},
	{"scripts_only", "-", "ok", false, true, false, "script=ok", "committed", 0, false},
	{"scripts_only", "-", "ok", false, false, true, "script=ok", "committed", 0, false},
	{"scripts_only", "-", "ok", false, false, false, "script=ok", "committed", 0, false},
	{"scripts_only", "-", "failed", true, true, true, "script=failed rerun=failed", "not_committed", 1, false},
	{"scripts_only", "-", "failed", true, true, false, "script=failed", "not_committed", 1, false},
	{"scripts_only", "-", "failed", true, false, true, "script=failed rerun=failed", "not_committed", 1, false},
	{"scripts_only", "-", "failed", true, false, false, "script=failed", "not_committed", 1, false},
	{"scripts_only", "-", "failed", false, true, true, "script=failed rerun=failed", "not_committed", 1, false},
	{"scripts_only", "-", "failed", false, true, false, "script=failed", "not_committed", 1, false},
	{"scripts_only", "-", "failed", false, false, true, "script=failed rerun=failed", "not_committed", 1, false},
	{"scripts_only", "-", "failed", false, false, false, "script=failed", "not_committed", 1, false},
	{"scripts_only", "-", "in_doubt", true, true, true, "script=in_doubt rerun=in_doubt", "not_committed", 1, false},
	{"scripts_only", "-", "in_doubt", true, true, false, "script=in_doubt", "not_committed", 1, false},
	{"scripts_only", "-", "in_doubt", true, false, true, "script=in_doubt rerun=in_doubt", "not_committed", 1, false},
	{"scripts_only", "-", "in_doubt", true, false, false, "script=in_doubt", "not_committed", 1, false},
	{"scripts_only", "-", "in_doubt", false, true, true, "script=in_doubt rerun=in_doubt", "not_committed", 1, false},
	{"scripts_only", "-", "in_doubt", false, true, false, "script=in_doubt", "not_committed", 1, false},
	{"scripts_only", "-", "in_doubt", false, false, true, "script=in_doubt rerun=in_doubt", "not_committed", 1, false},
	{"scripts_only", "-", "in_doubt", false, false, false, "script=in_doubt", "not_committed", 1, false},
	{"noop", "-", "ok", true, true, true, "script=ok", "committed", 0, false},
	{"noop", "-", "ok", true, true, false, "script=ok", "committed", 0, false},
	{"noop", "-", "ok", true, false, true, "script=ok", "committed", 0, false},
	{"noop", "-", "ok", true, false, false, "script=ok", "committed", 0, false},
	{"noop", "-", "ok", false, true, true, "script=ok", "committed", 0, false},
	{"noop", "-", "ok", false, true, false, "script=ok", "committed", 0, false},
	{"noop", "-", "ok", false, false, true, "script=ok", "committed", 0, false},
	{"noop", "-", "ok", false, false, false, "script=ok", "committed", 0, false},
	{"noop", "-", "failed", true, true, true, "script=failed rerun=failed", "not_committed", 1, false},
	{"noop", "-", "failed", true, true, false, "script=failed", "not_committed", 1, false},
	{"noop", "-", "failed", true, false, true, "script=failed rerun=failed", "not_committed", 1, false},
	{"noop", "-", "failed", true, false, false, "script=failed", "not_committed", 1, false},
	{"noop", "-", "failed", false, true, true, "script=failed rerun=failed", "not_committed", 1, false},
	{"noop", "-", "failed", false, true, false, "script=failed", "not_committed", 1, false},
	{"noop", "-", "failed", false, false, true, "script=failed rerun=failed", "not_committed", 1, false},
	{"noop", "-", "failed", false, false, false, "script=failed", "not_committed", 1, false},
	{"noop", "-", "in_doubt", true, true, true, "script=in_doubt rerun=in_doubt", "not_committed", 1, false},
	{"noop", "-", "in_doubt", true, true, false, "script=in_doubt", "not_committed", 1, false},
	{"noop", "-", "in_doubt", true, false, true, "script=in_doubt rerun=in_doubt", "not_committed", 1, false},
	{"noop", "-", "in_doubt", true, false, false, "script=in_doubt", "not_committed", 1, false},
	{"noop", "-", "in_doubt", false, true, true, "script=in_doubt rerun=in_doubt", "not_committed", 1, false},
	{"noop", "-", "in_doubt", false, true, false, "script=in_doubt", "not_committed", 1, false},
	{"noop", "-", "in_doubt", false, false, true, "script=in_doubt rerun=in_doubt", "not_committed", 1, false},
	{"noop", "-", "in_doubt", false, false, false, "script=in_doubt", "not_committed", 1, false},
}

// TestPolicy runs every row of policyCases through a fake runner: the
// policy as a table test, no broker.
func TestPolicy(t *testing.T) {
	t.Parallel()
	for _, tc := range policyCases {
		checkPolicyCase(t, tc)
	}
}

// checkPolicyCase runs the rotation of one row and checks its outcome, its
// step results and the runner's lifecycle.
func checkPolicyCase(t *testing.T, tc policyCase) {
	t.Helper()
	name := tc.name()
	f := &fakeRunner{builtin: tc.builtin, script: tc.script, rerun: tc.script}
	p := policyPlan(t, tc.mode, tc.rbPass, tc.rbPost, tc.rerun, "[{file: s.sh}]", false)
	out, err := runFake(t, f, p)
	if err != nil {
		t.Fatalf("%s: Run: %v", name, err)
	}
	checkPolicyOutcome(t, tc, out)
	checkPublishedResults(t, name, f, out)
	checkRunnerLifecycle(t, name, f)
}

// checkPolicyOutcome checks the steps, effect, unresolved count and
// may-have-changed flag the row expects, and the verdicts derived from them.
func checkPolicyOutcome(t *testing.T, tc policyCase, out Outcome) {
	t.Helper()
	name := tc.name()
	if got := stepsOf(out); got != tc.steps || out.Effect != tc.effect || out.Unresolved != tc.unresolved || out.MayHaveChanged != tc.mayHaveChanged {
		t.Errorf("%s rbPass=%v rbPost=%v rerun=%v: %q %s unresolved %d changed %v; want %q %s %d %v (%s)", name, tc.rbPass, tc.rbPost, tc.rerun,
			got, out.Effect, out.Unresolved, out.MayHaveChanged, tc.steps, tc.effect, tc.unresolved, tc.mayHaveChanged, out.Note)
	}
	if out.Success() != (tc.effect == EffectCommitted && tc.unresolved == 0) || out.Commits() != (tc.effect == EffectCommitted) || !out.Sent {
		t.Errorf("%s: success %v commits %v sent %v", name, out.Success(), out.Commits(), out.Sent)
	}
}

// checkPublishedResults checks that the results come in step order and
// that each step has a published result that agrees with it.
func checkPublishedResults(t *testing.T, name string, f *fakeRunner, out Outcome) {
	t.Helper()
	for i, rr := range out.Results {
		if rr.Step != i+1 {
			t.Errorf("%s: result %d is step %d", name, i, rr.Step)
		}
		if pub, ok := f.published[rr.Step]; !ok || pub.Success != rr.Success {
			t.Errorf("%s: step %d has no published result", name, rr.Step)
		}
	}
}

// checkRunnerLifecycle checks that the rotation began and ended once and
// announced its start, and nothing else.
func checkRunnerLifecycle(t *testing.T, name string, f *fakeRunner) {
	t.Helper()
	if f.begun != 1 || f.ended != 1 || len(f.events) != 1 || f.events[0].Kind != "started" {
		t.Errorf("%s: begun %d ended %d events %+v", name, f.begun, f.ended, f.events)
	}
}

// A rollback that fails after the built-in rotation succeeded: the
// resource most likely holds the new password, which is committed though
// the effect is rollback_failed.
func TestRollbackFails(t *testing.T) {
	t.Parallel()
	f := &fakeRunner{script: "failed", rerun: "failed", rollback: "failed"}
	out, err := runFake(t, f, policyPlan(t, "general", true, true, false, "[{file: s.sh}]", false))
	if err != nil {
		t.Fatal(err)
	}
	if stepsOf(out) != "rotate=ok script=failed rollback=failed" || out.Effect != EffectRollbackFailed || out.Unresolved != 2 || !out.StillSet || out.MayHaveChanged || !out.Commits() {
		t.Fatalf("%s %+v", stepsOf(out), out)
	}
	// The rollback's task swaps the passwords.
	last := f.tasks[len(f.tasks)-1]
	if last.Secret.NewPassword != "old-pw" || last.Secret.OldPassword != "new-pw" || !last.Rotation.Rollback {
		t.Fatalf("rollback task %+v", last.Secret)
	}
	// When the built-in rotation failed too, the resource may hold either.
	f = &fakeRunner{builtin: "failed", rollback: "failed"}
	out, _ = runFake(t, f, policyPlan(t, "general", true, false, false, "[{file: s.sh}]", false))
	if out.Effect != EffectRollbackFailed || out.StillSet || !out.MayHaveChanged || out.Commits() {
		t.Fatalf("%s %+v", stepsOf(out), out)
	}
}

// A re-run that succeeds resolves its script.
func TestRerunResolves(t *testing.T) {
	t.Parallel()
	f := &fakeRunner{script: "failed", rerun: "ok"}
	out, err := runFake(t, f, policyPlan(t, "general", true, true, true, "[{file: s.sh}]", false))
	if err != nil || stepsOf(out) != "rotate=ok script=failed rerun=ok" || out.Effect != EffectCommitted || out.Unresolved != 0 || !out.Success() {
		t.Fatalf("%s %+v %v", stepsOf(out), out, err)
	}
}

// stop_on_failure skips the scripts after a failed one, with a published
// result each; in scripts_only mode the rotation does not take effect,
// even when the re-run of the failed script succeeds.
func TestStopOnFailure(t *testing.T) {
	t.Parallel()
	f := &fakeRunner{script: "failed", rerun: "ok"}
	out, err := runFake(t, f, policyPlan(t, "scripts_only", false, false, true, "[{file: s.sh}, {file: t.sh}]", true))
	if err != nil || stepsOf(out) != "script=failed script=skipped rerun=ok" || out.Effect != EffectNotCommitted {
		t.Fatalf("%s %+v %v", stepsOf(out), out, err)
	}
	if rr, ok := f.published[2]; !ok || rr.Success {
		t.Fatalf("skipped step published as %+v (%v)", rr, ok)
	}
}

// A rotation cut short (the runner stops answering) returns the error with
// what ran so far, publishes nothing made up for the step in flight, and
// is resumed: steps with a published result are not sent again.
func TestCutShortThenResumed(t *testing.T) {
	t.Parallel()
	p := policyPlan(t, "scripts_only", false, false, false, "[{file: s.sh}, {file: t.sh}]", false)
	f := &fakeRunner{cut: 2}
	e := NewEngine(f, EngineOptions{})
	r := Rotation{ID: NewID(), Plan: p, NewPassword: "new-pw", OldPassword: "old-pw"}
	out, err := e.Run(t.Context(), r)
	if !errors.Is(err, errGone) || !out.Sent || out.Effect != EffectNotCommitted {
		t.Fatalf("cut short: %+v, %v", out, err)
	}
	if _, ok := f.published[2]; ok {
		t.Fatal("a result was made up for the step in flight")
	}
	r.Resume = true
	out, err = e.Run(t.Context(), r)
	if err != nil || stepsOf(out) != "script=ok script=ok" || out.Effect != EffectCommitted || f.sends != 3 {
		t.Fatalf("resumed: %s %+v %v (sends %d)", stepsOf(out), out, err, f.sends)
	}
	if len(f.events) != 1 {
		t.Fatalf("events %+v: a resumed rotation announces no second start", f.events)
	}
	e.Finished(t.Context(), "u", out, "")
	if ev := f.events[1]; ev.Kind != "completed" || ev.Effect != string(EffectCommitted) || ev.Steps != 2 {
		t.Fatalf("final event %+v", ev)
	}
}

// Abandon gives every step without a result a published failed one.
func TestAbandon(t *testing.T) {
	t.Parallel()
	p := policyPlan(t, "scripts_only", false, false, false, "[{file: s.sh}, {file: t.sh}]", false)
	f := &fakeRunner{}
	f.publish(messagesResult(1, true))
	out, err := NewEngine(f, EngineOptions{}).Abandon(t.Context(), "rot", p.Steps, "the inventory changed")
	if err != nil || out.Succeeded != 1 || out.Failed != 1 || out.Unresolved != 1 || !out.Sent || out.Effect != EffectNotCommitted {
		t.Fatalf("%+v %v", out, err)
	}
	if rr := f.published[2]; rr.Success || rr.Error != "no result (its task may have run before): the inventory changed" || rr.ExitCode != -1 {
		t.Fatalf("step 2: %+v", rr)
	}
}

// A run that cannot begin (its results cannot be watched) sent and
// announced nothing: its error says so, and it is not Sent unless an
// earlier run began.
func TestNotBegun(t *testing.T) {
	t.Parallel()
	p := policyPlan(t, "scripts_only", false, false, false, "[{file: s.sh}]", false)
	f := &fakeRunner{beginErr: errGone}
	e := NewEngine(f, EngineOptions{})
	out, err := e.Run(t.Context(), Rotation{ID: NewID(), Plan: p, NewPassword: "new-pw", OldPassword: "old-pw"})
	var nb notBegun
	if !errors.As(err, &nb) || !errors.Is(err, errGone) || out.Sent || len(f.events) != 0 || f.sends != 0 {
		t.Fatalf("%+v, %v; events %+v, sends %d", out, err, f.events, f.sends)
	}
	out, _ = e.Run(t.Context(), Rotation{ID: NewID(), Plan: p, NewPassword: "new-pw", OldPassword: "old-pw", Resume: true})
	if !out.Sent {
		t.Fatal("a resumed run that cannot begin is not Sent")
	}
}
