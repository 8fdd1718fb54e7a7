package rotation

import (
	"cmp"
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/rs/zerolog"

	"github.com/postrotate/postrotate/coordinator/plan"
	"github.com/postrotate/postrotate/messages"
)

// StepRunner is how the engine reaches the workers: it sends a step's task
// and brings back the step's result. Package dispatch implements it over
// JetStream; the engine's tests use a fake.
type StepRunner interface {
	// Begin starts collecting the results of rotation id; call it before
	// the rotation's first Send, and end once its run is over.
	Begin(ctx context.Context, rotationID string) (end func(), err error)
	// Send publishes task and waits for its step's result or deadline. A
	// step that cannot be sent (its secret cannot be sealed for its host),
	// whose task its worker refused, or that has no result by its
	// deadline gets a failed result, which Send publishes with the step's
	// event like any other. reached says whether the task may have reached
	// a worker, with or without an error: a task withdrawn from the queue
	// untaken has not. Send returns an error only when the rotation cannot
	// go on now (ctx ended, JetStream not answering): then nothing is
	// published for the step, which is run when the rotation is resumed.
	Send(ctx context.Context, task messages.Task) (rr messages.RotationResult, reached bool, err error)
	// Report publishes rr, the result the coordinator gives a step it does
	// not run, and the step's event. It retries until ctx ends, and then
	// returns the error, which names the step.
	Report(ctx context.Context, rr messages.RotationResult) error
	// Result returns the published result of a rotation's step; found is
	// false when the step has none.
	Result(ctx context.Context, rotationID string, step int) (rr messages.RotationResult, found bool, err error)
	// Announce publishes a rotation event. A lost event is logged, never
	// fatal.
	Announce(ctx context.Context, ev messages.RotationEvent)
}

// EngineOptions configure an Engine. A zero field means its default.
type EngineOptions struct {
	// PickupTimeout is how long a task may wait for its host's worker
	// before it expires and the step fails. Defaults to 1m.
	PickupTimeout time.Duration
	// Logger receives the engine's logs. Defaults to a disabled logger.
	Logger *zerolog.Logger
	// Now returns the current time. Defaults to time.Now.
	Now func() time.Time
}

// Engine runs rotations: their steps in order, through a StepRunner, and
// the rules that decide their effect.
//
// Steps run strictly in sequence: step n+1 is sent only once step n has a
// result, so the order user → resource → configuration holds across
// hosts. A failed script does not stop the steps after it, unless the PAM
// User's rotation sets stop_on_failure: then every later step is reported
// as not run.
type Engine struct {
	runner StepRunner
	opts   EngineOptions
	log    zerolog.Logger
}

// NewEngine returns an engine that runs steps through runner.
func NewEngine(runner StepRunner, opts EngineOptions) *Engine {
	opts.PickupTimeout = cmp.Or(opts.PickupTimeout, time.Minute)
	if opts.Now == nil {
		opts.Now = time.Now
	}
	log := zerolog.Nop()
	if opts.Logger != nil {
		log = *opts.Logger
	}
	return &Engine{runner: runner, opts: opts, log: log.With().Str("component", "engine").Logger()}
}

// Rotation is one rotation to run.
type Rotation struct {
	// ID identifies the rotation; NewID makes one.
	ID          string
	Plan        *plan.Plan
	NewPassword string
	OldPassword string
	// Resume continues a rotation a previous run started: steps that
	// already have a result are not run again; the step in flight is sent
	// again under the same message id (a duplicate the stream drops if the
	// first copy is still there) and waited for.
	Resume bool
}

// NewID returns a fresh, time-ordered rotation id (a UUIDv7).
func NewID() string { return uuid.Must(uuid.NewV7()).String() }

// Run runs r: its built-in rotation when it has one (when it fails the
// scripts are skipped, and the old password is set back when the plan's
// Policy says so), then its scripts in order, then — per the Policy — a
// re-run of each failed script and a rollback. It returns an error only
// when the rotation could not run to its end (ctx ended, the runner not
// answering): then no result is made up for a step whose task may have
// left, Outcome holds the results so far, and Run with Resume goes on.
// Run does not publish the rotation's final event: Finish does, once the
// outcome is stored.
func (e *Engine) Run(ctx context.Context, r Rotation) (Outcome, error) {
	if !messages.ValidToken(r.ID) {
		return Outcome{}, fmt.Errorf("rotation id %q is not a valid subject token", r.ID)
	}
	log := e.log.With().Str("rotation_id", r.ID).Str("user_uid", r.Plan.User.UID).Logger()
	end, err := e.runner.Begin(ctx, r.ID)
	if err != nil {
		log.Warn().Err(err).Msg("rotation not run now")
		return Outcome{RotationID: r.ID, Sent: r.Resume}, notBegun{err}
	}
	defer end()
	if r.Resume {
		log.Info().Int("steps", len(r.Plan.Steps)).Msg("rotation resumed")
	} else {
		e.runner.Announce(ctx, messages.RotationEvent{
			Kind: messages.EventStarted, RotationID: r.ID, UserRecordUID: r.Plan.User.UID, Steps: len(r.Plan.Steps),
		})
		log.Info().Int("steps", len(r.Plan.Steps)).Msg("rotation started")
	}
	x := &run{e: e, r: r, log: log, out: Outcome{RotationID: r.ID}, next: len(r.Plan.Steps) + 1}
	x.steps(ctx)
	// Resumed, a previous run may have sent any of its tasks.
	x.out.Sent = r.Resume || x.out.reached > 0
	if x.err != nil {
		log.Info().Err(x.err).Msg("rotation interrupted")
		return x.out, x.err
	}
	return x.out, nil
}

// notBegun is the error of a run that did not begin (its results could not
// be watched): nothing of it was sent or announced.
type notBegun struct{ error }

func (e notBegun) Unwrap() error { return e.error }

// Finished publishes the completed or failed event of rotation out of
// user, with why it failed as a whole when it did: call it once the
// outcome is stored, so that whoever sees the event also sees the stored
// outcome. The event is published even when ctx has ended (the outcome is
// stored: nothing would publish it later), within a few seconds.
func (e *Engine) Finished(ctx context.Context, user string, out Outcome, why string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), finalEventWithin)
	defer cancel()
	e.runner.Announce(ctx, out.event(user, why))
	e.log.Info().Str("rotation_id", out.RotationID).Str("user_uid", user).Int("succeeded", out.Succeeded).Int("failed", out.Failed).
		Str("effect", string(out.Effect)).Msg("rotation finished")
}

// finalEventWithin bounds the publish of a rotation's final event.
const finalEventWithin = 15 * time.Second

// Abandon ends rotation id of user, which cannot be resumed (why: its plan
// changed, its passwords are gone): each of steps without a published
// result gets a failed result naming why, published with its step event.
// The outcome is Sent (a previous run may have sent any task) and not
// committed. It returns an error when a step's result could not be read,
// or ctx ended before every step had its result.
func (e *Engine) Abandon(ctx context.Context, id string, steps []plan.Step, why string) (Outcome, error) {
	out := Outcome{RotationID: id, Sent: true, Effect: EffectNotCommitted, Note: why}
	for _, step := range steps {
		rr, found, err := e.runner.Result(ctx, id, step.Index)
		if err != nil {
			return out, fmt.Errorf("read the result of step %d: %w", step.Index, err)
		}
		if !found {
			rr = notRun(id, step, "no result (its task may have run before): "+why, e.opts.Now())
			if err := e.runner.Report(ctx, rr); err != nil {
				return out, err
			}
		}
		out.add(rr)
		if !rr.Success {
			out.Unresolved++
		}
	}
	return out, nil
}

// Results returns the published results of a rotation's steps 1..steps,
// in order; steps without a result yet are left out.
func (e *Engine) Results(ctx context.Context, rotationID string, steps int) ([]messages.RotationResult, error) {
	var out []messages.RotationResult
	for i := 1; i <= steps; i++ {
		rr, found, err := e.runner.Result(ctx, rotationID, i)
		if err != nil {
			return out, fmt.Errorf("read the result of step %d: %w", i, err)
		}
		if found {
			out = append(out, rr)
		}
	}
	return out, nil
}

// notRun is the failed result of a step of rotation id that did not run.
func notRun(id string, step plan.Step, reason string, at time.Time) messages.RotationResult {
	return messages.NotRun(messages.Task{
		RotationID: id, Step: step.Index, Host: step.Host, RecordUID: step.RecordUID,
		Script: messages.Script{Name: step.Script.Name, Title: step.Script.Title},
	}, reason, at)
}

// run is one run of a rotation's steps.
type run struct {
	e    *Engine
	r    Rotation
	log  zerolog.Logger
	out  Outcome
	err  error // the rotation cannot go on now (ctx, the runner): it is resumed
	next int   // index of the next unplanned step (re-runs, rollback)
}

// steps runs the plan's steps, then the re-runs and the rollback the
// policy asks for, and sets the outcome's effect.
func (x *run) steps(ctx context.Context) {
	p := x.r.Plan
	v := verdict{}
	rotation, general := p.RotationStep()
	scripts := p.Steps
	if general {
		v.general = true
		scripts = p.Steps[1:]
		v.rotationFailed = !x.exec(ctx, rotation, "").Success
	}
	failed := x.scripts(ctx, scripts, &v)
	if len(failed) > 0 && p.Policy.RerunOnPostRotationFail && x.err == nil {
		failed = x.rerun(ctx, failed)
	}
	v.failed = len(failed)
	x.out.Unresolved = len(failed)
	if v.rotationFailed {
		x.out.Unresolved++
	}
	v.cutShort = x.err != nil
	d := decide(v, p.Policy)
	x.out.Effect, x.out.Note, x.out.MayHaveChanged = d.effect, d.note, d.mayHaveChanged
	if v.cutShort {
		x.out.Note += x.err.Error()
	}
	if d.rollback != "" {
		x.rollback(ctx, d.rollback)
	}
}

// scripts runs the scripts in order, skipping them all when the built-in
// rotation failed and the ones after a failure with stop_on_failure, and
// returns the ones that ran and failed.
func (x *run) scripts(ctx context.Context, scripts []plan.Step, v *verdict) []plan.Step {
	var failed []plan.Step
	skip := ""
	if v.rotationFailed {
		skip = fmt.Sprintf("not run: the password rotation (step %d) failed", x.r.Plan.Steps[0].Index)
	}
	for _, step := range scripts {
		rr := x.exec(ctx, step, skip)
		if rr.Success || skip != "" || x.err != nil {
			continue
		}
		failed = append(failed, step)
		if x.r.Plan.User.Rotation.StopOnFailure {
			skip = fmt.Sprintf("not run: step %d failed and the rotation has stop_on_failure", step.Index)
			v.stopped = true
		}
	}
	return failed
}

// rerun runs each failed script once more and returns the re-runs that
// failed again.
func (x *run) rerun(ctx context.Context, failed []plan.Step) []plan.Step {
	var still []plan.Step
	for _, step := range failed {
		again := x.r.Plan.RerunStep(step, x.take())
		if !x.exec(ctx, again, "").Success {
			still = append(still, again)
		}
	}
	return still
}

// rollback sets the old password back on the resource.
func (x *run) rollback(ctx context.Context, why string) {
	step, _ := x.r.Plan.RollbackStep(x.take())
	rr := x.exec(ctx, step, "")
	switch {
	case x.err != nil:
		x.out.Effect, x.out.Note = EffectRollbackFailed, why+"; the rollback was cut short: "+x.err.Error()
	case rr.Success:
		x.out.Effect, x.out.Note = EffectRolledBack, why+"; the old password was set back"
	default:
		x.out.Effect, x.out.Note = EffectRollbackFailed, why+"; setting the old password back failed: the resource may hold either password"
		x.out.Unresolved++
	}
	if x.out.Effect == EffectRollbackFailed {
		rotated := len(x.out.Results) > 0 && x.out.Results[0].Success
		x.out.StillSet, x.out.MayHaveChanged = rotated, !rotated
	}
}

// take returns the index of the next unplanned step.
func (x *run) take() int {
	i := x.next
	x.next++
	return i
}

// exec runs step. skip, when not empty, is why the step is deliberately
// not run: its result is published. When the rotation cannot go on, the
// step is left for the resumed rotation: its result here is not
// published.
func (x *run) exec(ctx context.Context, step plan.Step, skip string) messages.RotationResult {
	if x.err == nil && skip == "" {
		rr, err := x.send(ctx, step)
		if err == nil {
			x.out.add(rr)
			return rr
		}
		x.err = err
	}
	if x.err != nil {
		rr := notRun(x.r.ID, step, "not run: "+x.err.Error(), x.e.opts.Now())
		x.out.add(rr)
		return rr
	}
	rr := notRun(x.r.ID, step, skip, x.e.opts.Now())
	if err := x.e.runner.Report(ctx, rr); err != nil {
		x.err = err // it says which step
	}
	x.out.add(rr)
	return rr
}

// send sends step's task and returns its result. A step whose task cannot
// be built gets a failed result, published like any other. Resumed, a
// step that has a result already is not sent again.
func (x *run) send(ctx context.Context, step plan.Step) (messages.RotationResult, error) {
	log := x.log.With().Int("step", step.Index).Str("host", step.Host).Logger()
	if x.r.Resume {
		rr, found, err := x.e.runner.Result(ctx, x.r.ID, step.Index)
		if err != nil {
			return messages.RotationResult{}, fmt.Errorf("read the result of step %d: %w", step.Index, err)
		}
		if found {
			return rr, nil
		}
	}
	task, err := buildTask(x.r, step, x.e.opts.Now(), x.e.opts.PickupTimeout)
	if err != nil {
		// Nothing was sent: this step's failure, not the rotation's.
		log.Error().Err(err).Msg("step not sent")
		rr := notRun(x.r.ID, step, err.Error(), x.e.opts.Now())
		return rr, x.e.runner.Report(ctx, rr)
	}
	rr, reached, err := x.e.runner.Send(ctx, task)
	if reached {
		x.out.reached++ // a target may hold the new password
	}
	return rr, err
}
