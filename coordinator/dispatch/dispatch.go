package dispatch

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/postrotate/postrotate/coordinator/plan"
	"github.com/postrotate/postrotate/messages"
	"github.com/postrotate/postrotate/messages/envelope"
	"github.com/postrotate/postrotate/messages/layout"
	"github.com/postrotate/postrotate/payload"
)

// Options configure a Dispatcher. A zero field means its default.
type Options struct {
	Layout layout.Layout
	// PickupTimeout is how long a task may wait for its host's worker
	// before it expires and the step fails. Defaults to 1m.
	PickupTimeout time.Duration
	// KillGrace is added to a step's deadline for the worker to kill a
	// timed-out script and report. Defaults to 30s.
	KillGrace time.Duration
	// Logger receives the dispatcher's logs. Defaults to a disabled logger.
	Logger *zerolog.Logger
	// Now returns the current time. Defaults to time.Now.
	Now func() time.Time
	// Signer is the coordinator's identity. With it every task is signed
	// (headers envelope.HeaderSignature and HeaderSigner over the exact
	// published data) and its secret sealed for the worker of its host
	// (WorkerKey): the broker never sees a secret, and workers started with
	// credentials refuse anything else. Without it tasks go out unsigned
	// with their secrets in clear: for tests and a trusted network only.
	Signer *envelope.Coordinator
	// WorkerKey returns the curve public key ("X...") enrolled for the
	// worker of host, which its tasks' secrets are sealed for: "" or an
	// error wrapping ErrNoWorkerKey when the host has none, and then the
	// step fails without sending anything. Used only with Signer; nil means
	// no host has a key.
	WorkerKey func(ctx context.Context, host string) (string, error)
}

// ErrNoWorkerKey is wrapped by the error of a step whose host has no
// enrolled worker key to seal its task's secret for. Options.WorkerKey may
// return it.
var ErrNoWorkerKey = errors.New("no enrolled worker")

// Dispatcher runs rotations over JetStream.
type Dispatcher struct {
	js   jetstream.JetStream
	opts Options
	log  zerolog.Logger
}

// New returns a dispatcher. It does not create streams: call Layout.Setup.
func New(js jetstream.JetStream, opts Options) *Dispatcher {
	opts.Layout = opts.Layout.WithDefaults()
	opts.PickupTimeout = cmp.Or(opts.PickupTimeout, time.Minute)
	opts.KillGrace = cmp.Or(opts.KillGrace, 30*time.Second)
	if opts.Now == nil {
		opts.Now = time.Now
	}
	log := zerolog.Nop()
	if opts.Logger != nil {
		log = *opts.Logger
	}
	return &Dispatcher{js: js, opts: opts, log: log.With().Str("component", "dispatcher").Logger()}
}

// Rotation is one rotation to run.
type Rotation struct {
	// ID identifies the rotation; NewID makes one.
	ID          string
	Plan        *plan.Plan
	NewPassword string
	OldPassword string
	// Resume continues a rotation a previous coordinator started: steps
	// that already have a result are not run again, the step in flight is
	// republished under the same message id (a duplicate the stream drops
	// if the first copy is still there) and waited for.
	Resume bool
	// BeforeFinish, when set, is called with the outcome once every step has
	// a result and before the rotation's completed/failed event, so that
	// whoever sees the event also sees the stored outcome. When it returns
	// an error (the outcome could not be stored before ctx ended) Run
	// returns it without the event: the rotation is resumed later.
	BeforeFinish func(Outcome) error
}

// NewID returns a fresh, time-ordered rotation id (a UUIDv7).
func NewID() string { return uuid.Must(uuid.NewV7()).String() }

// Effect says whether a rotation's new password took effect: what the
// coordinator commits as the user's password.
type Effect string

const (
	// EffectCommitted: the new password is the user's password now (a
	// general rotation changed it, possibly with failed scripts that did
	// not ask for a rollback; a scripts_only rotation whose scripts all
	// succeeded).
	EffectCommitted Effect = "committed"
	// EffectNotCommitted: the rotation did not take effect; the old
	// password stays the user's (a scripts_only rotation with a failed
	// script, a failed built-in rotation without rollback, a rotation cut
	// short).
	EffectNotCommitted Effect = "not_committed"
	// EffectRolledBack: the new password was set, then the old one set
	// back.
	EffectRolledBack Effect = "rolled_back"
	// EffectRollbackFailed: setting the old password back failed: the
	// resource may hold either password. Needs a person.
	EffectRollbackFailed Effect = "rollback_failed"
)

// Outcome is what a rotation produced.
type Outcome struct {
	RotationID string
	// Results has one RotationResult per step run or skipped, in execution
	// order: the planned steps, then re-runs and a rollback when they
	// happened.
	Results   []messages.RotationResult
	Succeeded int
	Failed    int
	// Effect is whether the new password took effect; Note says why, for
	// people.
	Effect Effect
	Note   string
	// Unresolved counts the steps that failed in the end: a script whose
	// re-run succeeded is resolved.
	Unresolved int
	// MayHaveChanged is set when the new password did not take effect but
	// may have reached the resource (a failed built-in rotation without
	// rollback, a failed rollback): it must be kept somewhere a person
	// finds it.
	MayHaveChanged bool
	// StillSet is set when a rollback failed after the built-in rotation
	// succeeded: the resource most likely holds the new password, which
	// is therefore committed although the effect is rollback_failed.
	StillSet bool
	// Sent is set once a task carrying the new password may have left the
	// coordinator (its publish was attempted, or a previous coordinator
	// ran the rotation before it was resumed): a target may hold the new
	// password, so a rotation that does not commit it keeps it as
	// uncommitted. Unset, nothing carried it anywhere.
	Sent bool
	// reached counts the steps whose task may have reached a worker: a
	// task withdrawn from the queue untaken does not count.
	reached int
}

// Commits reports whether the rotation's new password is the user's now:
// it took effect, or a failed rollback most likely left it set.
func (o Outcome) Commits() bool { return o.Effect == EffectCommitted || o.StillSet }

// Success reports whether the rotation took effect and nothing failed in
// the end.
func (o Outcome) Success() bool {
	return o.Effect == EffectCommitted && o.Unresolved == 0
}

// Run runs r: its built-in rotation when it has one (when it fails the
// scripts are skipped, and the old password is set back when the plan's
// Policy says so), then its scripts in order, then — per the Policy — a
// re-run of each failed script and a rollback. It returns an error only
// when the rotation could not run to its end (ctx ended, JetStream did not
// answer a read or a watch): then it has not finished — no BeforeFinish,
// no final event, no result made up for a step whose task may have left —
// and Outcome holds the results so far. Run it again with Resume to go on
// (server does, with a backoff).
func (d *Dispatcher) Run(ctx context.Context, r Rotation) (Outcome, error) {
	if !messages.ValidToken(r.ID) {
		return Outcome{}, fmt.Errorf("rotation id %q is not a valid subject token", r.ID)
	}
	out := Outcome{RotationID: r.ID}
	log := d.log.With().Str("rotation_id", r.ID).Str("user_uid", r.Plan.User.UID).Logger()

	results, err := d.watchResults(ctx, r.ID)
	if err != nil {
		log.Warn().Err(err).Msg("rotation not run now")
		return out, err
	}
	defer results.Stop()

	if r.Resume {
		log.Info().Int("steps", len(r.Plan.Steps)).Msg("rotation resumed")
	} else {
		d.event(ctx, log, d.opts.Layout.Subjects.RotationEvent(messages.EventStarted), messages.RotationEvent{
			Kind: messages.EventStarted, RotationID: r.ID, UserRecordUID: r.Plan.User.UID, Steps: len(r.Plan.Steps),
		})
		log.Info().Int("steps", len(r.Plan.Steps)).Msg("rotation started")
	}

	e := &engine{d: d, ctx: ctx, log: log, r: r, results: results, out: &out}
	e.run()
	// Resumed, a previous run may have published any of its tasks.
	out.Sent = r.Resume || out.reached > 0
	if e.runErr != nil {
		// Cut short (the coordinator stopping, JetStream not answering):
		// no outcome, no final event; the rotation is resumed.
		log.Info().Err(e.runErr).Msg("rotation interrupted")
		return out, e.runErr
	}
	if r.BeforeFinish != nil {
		if err := r.BeforeFinish(out); err != nil {
			log.Warn().Err(err).Msg("rotation outcome not stored; it is finished when resumed")
			return out, err
		}
	}
	kind := messages.EventCompleted
	if !out.Success() {
		kind = messages.EventFailed
	}
	ev := messages.RotationEvent{
		Kind: kind, RotationID: r.ID, UserRecordUID: r.Plan.User.UID, Steps: len(out.Results),
		Succeeded: out.Succeeded, Failed: out.Failed, Effect: string(out.Effect),
	}
	d.event(ctx, log, d.opts.Layout.Subjects.RotationEvent(kind), ev)
	log.Info().Int("succeeded", out.Succeeded).Int("failed", out.Failed).Str("effect", string(out.Effect)).Msg("rotation finished")
	return out, nil
}

// engine runs one rotation's steps and decides its effect.
type engine struct {
	d       *Dispatcher
	ctx     context.Context
	log     zerolog.Logger
	r       Rotation
	results *resultWatch
	out     *Outcome
	runErr  error // the rotation cannot go on now (ctx, JetStream): it is resumed
	next    int   // index of the next unplanned step
}

// exec runs step. skip, when not empty, is why the step is deliberately
// not run: its result is published. When the rotation cannot go on, the
// step is left for the resumed rotation.
func (e *engine) exec(step plan.Step, skip string) messages.RotationResult {
	if e.runErr == nil && skip == "" {
		rr, err := e.d.step(e.ctx, e.log, e.r, step, e.results, e.out)
		if err == nil {
			e.out.add(rr)
			return rr
		}
		e.runErr = err
	}
	if e.runErr != nil {
		// Cut short: this step is run, or reported, when the rotation is
		// resumed; nothing is published for it now.
		rr := e.d.failed(e.r, step, "not run: "+e.runErr.Error())
		e.out.add(rr)
		return rr
	}
	rr := e.d.failed(e.r, step, skip)
	if err := e.d.report(e.ctx, e.log, step, rr); err != nil {
		e.runErr = err
	}
	e.out.add(rr)
	return rr
}

func (e *engine) run() {
	p := e.r.Plan
	e.next = len(p.Steps) + 1
	rotation, general := p.RotationStep()
	scripts := p.Steps
	rotationFailed := false
	if general {
		scripts = p.Steps[1:]
		rotationFailed = !e.exec(rotation, "").Success
	}

	var failed []plan.Step // scripts that ran and failed
	skip := ""
	if rotationFailed {
		skip = fmt.Sprintf("not run: the password rotation (step %d) failed", rotation.Index)
	}
	for _, step := range scripts {
		rr := e.exec(step, skip)
		if rr.Success || skip != "" || e.runErr != nil {
			continue
		}
		failed = append(failed, step)
		if p.User.Rotation.StopOnFailure {
			skip = fmt.Sprintf("not run: step %d failed and the rotation has stop_on_failure", step.Index)
		}
	}
	e.out.Unresolved = len(failed)
	if rotationFailed {
		e.out.Unresolved++
	}

	if len(failed) > 0 && p.Policy.RerunOnPostRotationFail && e.runErr == nil {
		var still []plan.Step
		for _, step := range failed {
			again := p.RerunStep(step, e.take())
			if !e.exec(again, "").Success {
				still = append(still, again)
			}
		}
		e.out.Unresolved = len(still)
		failed = still
	}

	switch {
	case e.runErr != nil:
		e.out.Effect, e.out.Note = EffectNotCommitted, "the rotation was cut short: "+e.runErr.Error()
	case !general && len(failed) > 0:
		e.out.Effect, e.out.Note = EffectNotCommitted, "a script failed: in scripts_only mode the rotation takes effect only when every script succeeds"
	case !general && skip != "":
		e.out.Effect, e.out.Note = EffectNotCommitted, "a script failed (stop_on_failure)"
	case !general:
		e.out.Effect, e.out.Note = EffectCommitted, "every script succeeded"
	case rotationFailed && p.Policy.RollbackOnPasswordFail:
		e.rollback("the password rotation failed")
	case rotationFailed:
		e.out.MayHaveChanged = true
		e.out.Effect, e.out.Note = EffectNotCommitted, "the password rotation failed and Rollback On Password Fail is off: the resource may hold the new password, which is kept in the history"
	case len(failed) > 0 && p.Policy.RollbackOnPostRotationFail:
		e.rollback("a post-rotation script failed")
	case len(failed) > 0:
		e.out.Effect, e.out.Note = EffectCommitted, "the password was changed; a post-rotation script failed (Rollback On Post Rotation Fail is off)"
	default:
		e.out.Effect, e.out.Note = EffectCommitted, "the password was changed and every script succeeded"
	}
}

// take returns the index of the next unplanned step.
func (e *engine) take() int {
	i := e.next
	e.next++
	return i
}

// rollback sets the old password back on the resource.
func (e *engine) rollback(why string) {
	step, _ := e.r.Plan.RollbackStep(e.take())
	rr := e.exec(step, "")
	switch {
	case e.runErr != nil:
		e.out.Effect, e.out.Note = EffectRollbackFailed, why+"; the rollback was cut short: "+e.runErr.Error()
	case rr.Success:
		e.out.Effect, e.out.Note = EffectRolledBack, why+"; the old password was set back"
	default:
		e.out.Effect, e.out.Note = EffectRollbackFailed, why+"; setting the old password back failed: the resource may hold either password"
		e.out.Unresolved++
	}
	if e.out.Effect == EffectRollbackFailed {
		rotated := len(e.out.Results) > 0 && e.out.Results[0].Success
		e.out.StillSet, e.out.MayHaveChanged = rotated, !rotated
	}
}

func (o *Outcome) add(rr messages.RotationResult) {
	o.Results = append(o.Results, rr)
	if rr.Success {
		o.Succeeded++
	} else {
		o.Failed++
	}
}

// step publishes one task and waits for its result or its deadline. A step
// that cannot be sent (its payload cannot be built, its secret cannot be
// sealed for its host) gets a failed result, published with its step event
// like any other. It returns an error only when the rotation cannot go on
// (ctx ended, the result watch failed).
func (d *Dispatcher) step(ctx context.Context, log zerolog.Logger, r Rotation, step plan.Step, results *resultWatch, out *Outcome) (messages.RotationResult, error) {
	log = log.With().Int("step", step.Index).Str("host", step.Host).Logger()
	if r.Resume {
		rr, err := d.storedResult(ctx, r.ID, step.Index)
		if err == nil {
			return rr, nil
		}
		if !errors.Is(err, jetstream.ErrMsgNotFound) {
			return messages.RotationResult{}, fmt.Errorf("read stored result of step %d: %w", step.Index, err)
		}
	}
	task, err := d.task(r, step)
	if err == nil {
		var msg *nats.Msg
		if msg, err = d.message(ctx, task); err == nil {
			return d.send(ctx, log, r, step, task, msg, results, out)
		}
	}
	// Nothing was sent: this step's failure, not the rotation's.
	log.Error().Err(err).Msg("step not sent")
	rr := d.failed(r, step, err.Error())
	return rr, d.report(ctx, log, step, rr)
}

// send publishes the task of step and waits for its result or deadline.
func (d *Dispatcher) send(ctx context.Context, log zerolog.Logger, r Rotation, step plan.Step, task messages.Task, msg *nats.Msg,
	results *resultWatch, out *Outcome) (messages.RotationResult, error) {
	subj := d.opts.Layout.Subjects
	out.reached++ // from here on a target may receive the new password
	ack, err := d.retry(ctx, log, "publish task", func(ctx context.Context) (*jetstream.PubAck, error) {
		return d.js.PublishMsg(ctx, msg, jetstream.WithMsgID(task.ID))
	})
	if err != nil {
		return messages.RotationResult{}, fmt.Errorf("publish task of step %d: %w", step.Index, err)
	}
	d.event(ctx, log, subj.StepEvent(messages.EventStarted), messages.StepEvent{
		Kind: messages.EventStarted, RotationID: r.ID, Step: step.Index, Host: step.Host, UID: step.RecordUID, Name: step.Script.Name,
	})
	log.Debug().Str("script", step.Script.Name).Msg("task published")

	// First deadline: a worker must have taken the task by its expiry.
	want := expect{step: step.Index, host: step.Host, seq: ack.Sequence}
	rr, err := results.wait(ctx, want, task.ExpiresAt)
	deadline := task.ExpiresAt.Add(task.Script.Timeout() + d.opts.KillGrace)
	if errors.Is(err, errDeadline) {
		if taken, terr := d.withdraw(ctx, step.Host, ack.Sequence); terr != nil {
			log.Warn().Err(terr).Msg("check task pickup")
		} else if !taken {
			deadline = time.Now() // withdrawn: it can never run
			out.reached--
		}
		rr, err = results.wait(ctx, want, deadline)
	}
	var refused *RefusedError
	switch {
	case errors.As(err, &refused):
		// The worker found this very message wanting (a secret sealed for
		// a key it no longer has, a clock far off...): the step fails now.
		rr = d.failed(r, step, refused.Error())
		rr.Worker = refused.Worker
		log.Warn().Str("reason", refused.Reason).Msg("task refused by its worker")
		return rr, d.report(ctx, log, step, rr)
	case errors.Is(err, errDeadline):
		rr = d.failed(r, step, fmt.Sprintf("no result from host %q by %s: no live worker of that host took the task within %s, or it did not report",
			step.Host, deadline.UTC().Format(time.RFC3339), d.opts.PickupTimeout))
		// First result wins: a late worker result for this step is dropped as a duplicate.
		log.Warn().Msg("step deadline passed")
		return rr, d.report(ctx, log, step, rr)
	case err != nil:
		return messages.RotationResult{}, err
	}
	d.stepEvent(ctx, log, step, rr)
	return rr, nil
}

// report publishes rr, the result the coordinator gives step (not run,
// not sent, refused, no result by its deadline), and its step event. It
// retries until ctx ends, and then returns the error: the rotation is cut
// short and resumed later, and this step's result published then.
func (d *Dispatcher) report(ctx context.Context, log zerolog.Logger, step plan.Step, rr messages.RotationResult) error {
	if _, err := d.retry(ctx, log, "publish result", func(ctx context.Context) (*jetstream.PubAck, error) {
		return d.publishResult(ctx, rr)
	}); err != nil {
		return fmt.Errorf("publish the result of step %d: %w", step.Index, err)
	}
	d.stepEvent(ctx, log, step, rr)
	return nil
}

// stepEvent publishes the completed or failed event of step.
func (d *Dispatcher) stepEvent(ctx context.Context, log zerolog.Logger, step plan.Step, rr messages.RotationResult) {
	kind := messages.EventCompleted
	if !rr.Success {
		kind = messages.EventFailed
	}
	d.event(ctx, log, d.opts.Layout.Subjects.StepEvent(kind), messages.StepEvent{
		Kind: kind, RotationID: rr.RotationID, Step: step.Index, Host: step.Host, UID: step.RecordUID, Name: step.Script.Name,
		Success: rr.Success, Error: rr.Error,
	})
}

// Attempts of a publish: each is short, so that a lost ack (a broker
// restarting, a leader moving) costs one attempt, not the whole wait.
const (
	publishAttempt    = 5 * time.Second
	maxPublishBackoff = 5 * time.Second
)

// retry calls publish with a short deadline per attempt until it succeeds
// or ctx ends (the coordinator stopping). A publish with a message id is
// idempotent: the stream drops a duplicate of a message that arrived.
func (d *Dispatcher) retry(ctx context.Context, log zerolog.Logger, what string, publish func(context.Context) (*jetstream.PubAck, error)) (*jetstream.PubAck, error) {
	backoff := time.Duration(0)
	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, publishAttempt)
		ack, err := publish(actx)
		cancel()
		if err == nil {
			if attempt > 1 {
				log.Info().Int("attempt", attempt).Msg(what + ": succeeded after retries")
			}
			return ack, nil
		}
		backoff = min(max(2*backoff, 100*time.Millisecond), maxPublishBackoff)
		log.Warn().Err(err).Int("attempt", attempt).Dur("retry_in", backoff).Msg(what)
		select {
		case <-ctx.Done():
			return nil, errors.Join(err, ctx.Err())
		case <-time.After(backoff):
		}
	}
}

// task builds the task of one step, with its Keeper payload.
func (d *Dispatcher) task(r Rotation, step plan.Step) (messages.Task, error) {
	now := d.opts.Now()
	var secret *messages.TaskSecret
	var rotation *messages.Rotation
	if step.Runner == plan.RunnerRotate {
		// No payload: the rotator gets the two passwords, swapped for a
		// rollback.
		secret = &messages.TaskSecret{NewPassword: r.NewPassword, OldPassword: r.OldPassword, Mask: slices.Concat([]string{r.NewPassword, r.OldPassword}, r.Plan.Secrets())}
		if step.Rotation.Rollback {
			secret.NewPassword, secret.OldPassword = r.OldPassword, r.NewPassword
		}
		rotation = &messages.Rotation{Kind: step.Rotation.Kind, Login: r.Plan.User.Login(), Database: step.Rotation.Database, SSLMode: step.Rotation.SSLMode, Rollback: step.Rotation.Rollback}
	} else {
		in := r.Plan.Input(step, r.NewPassword, r.OldPassword)
		params, err := payload.Build(in)
		if err != nil {
			return messages.Task{}, fmt.Errorf("build payload: %w", err)
		}
		stdin, err := params.Encode()
		if err != nil {
			return messages.Task{}, fmt.Errorf("encode payload: %w", err)
		}
		// params.Secrets adds the records blob and the whole line: a script
		// echoing its input must not leak the secrets inside them.
		secret = &messages.TaskSecret{Stdin: stdin, Mask: slices.Concat(in.Secrets(), r.Plan.Secrets(), params.Secrets())}
	}
	var conn *messages.Connection
	if step.Target != "" {
		var err error
		conn, secret.Credential, err = connection(r.Plan, step)
		if err != nil {
			return messages.Task{}, err
		}
	}
	var req *messages.Request
	if h := step.Script.HTTP; h != nil {
		req = &messages.Request{Method: h.Method, URL: h.URL, Headers: h.Headers, Body: h.Body, ExpectStatus: h.ExpectStatus}
	}
	return messages.Task{
		SchemaVersion: messages.SchemaVersion,
		ID:            fmt.Sprintf("%s-%d", r.ID, step.Index),
		RotationID:    r.ID,
		Step:          step.Index,
		Host:          step.Host,
		Runner:        step.Runner,
		Target:        step.Target,
		RecordUID:     step.RecordUID,
		Script: messages.Script{
			Name:             step.Script.Name,
			Title:            step.Script.Title,
			Command:          step.Script.Command,
			Content:          step.Script.Content,
			TimeoutMS:        step.Script.Timeout.Milliseconds(),
			RetryOnInterrupt: step.Script.RetryOnInterrupt,
		},
		Connection: conn,
		Request:    req,
		Rotation:   rotation,
		CreatedAt:  now,
		ExpiresAt:  now.Add(d.opts.PickupTimeout),
		Secret:     secret,
	}, nil
}

// message returns the message that carries task: with a Signer its secret
// sealed for the host's worker and the data signed, else the task as it is.
func (d *Dispatcher) message(ctx context.Context, task messages.Task) (*nats.Msg, error) {
	msg := &nats.Msg{Subject: d.opts.Layout.Subjects.Tasks(task.Host), Header: nats.Header{}}
	if d.opts.Signer != nil {
		key, err := d.workerKey(ctx, task.Host)
		if err != nil {
			return nil, err
		}
		sealed, err := d.opts.Signer.SealSecret(*task.Secret, key)
		if err != nil {
			return nil, fmt.Errorf("host %q: %w", task.Host, err)
		}
		task.Secret, task.SealedSecret = nil, sealed
	}
	data, err := json.Marshal(task)
	if err != nil {
		return nil, fmt.Errorf("encode task: %w", err)
	}
	msg.Data = data
	if d.opts.Signer != nil {
		sig, signer, err := d.opts.Signer.Sign(data)
		if err != nil {
			return nil, err
		}
		msg.Header.Set(envelope.HeaderSignature, sig)
		msg.Header.Set(envelope.HeaderSigner, signer)
	}
	return msg, nil
}

// workerKey returns the curve key of host's worker.
func (d *Dispatcher) workerKey(ctx context.Context, host string) (string, error) {
	noKey := fmt.Errorf("host %q has %w: run postrotate worker add %s", host, ErrNoWorkerKey, host)
	if d.opts.WorkerKey == nil {
		return "", noKey
	}
	key, err := d.opts.WorkerKey(ctx, host)
	switch {
	case errors.Is(err, ErrNoWorkerKey), err == nil && key == "":
		return "", noKey
	case err != nil:
		return "", fmt.Errorf("look up the worker key of host %q: %w", host, err)
	}
	return key, nil
}

// connection returns how the gateway reaches the step's machine and the
// machine's admin credential.
func connection(p *plan.Plan, step plan.Step) (*messages.Connection, *messages.Credential, error) {
	m, ok := p.Record(step.Target)
	if !ok || m.Connection == nil {
		return nil, nil, fmt.Errorf("step %d: resource %q has no connection", step.Index, step.Target)
	}
	c := m.Connection
	admin, ok := p.Record(c.Admin)
	if !ok {
		return nil, nil, fmt.Errorf("step %d: resource %q: no admin record %q", step.Index, m.UID, c.Admin)
	}
	cred := &messages.Credential{Login: admin.Login(), Password: admin.Password()}
	for _, f := range admin.Fields {
		if v, ok := f.Value.(string); ok && (f.Type == "privateKey" || f.Label == "privateKey" || f.Label == "Private PEM Key") && cred.PrivateKey == "" {
			cred.PrivateKey = v
		}
		if v, ok := f.Value.(map[string]any); ok && f.Type == "keyPair" && cred.PrivateKey == "" {
			cred.PrivateKey, _ = v["privateKey"].(string)
		}
		if v, ok := f.Value.(string); ok && f.Label == "passphrase" {
			cred.Passphrase = v
		}
	}
	if cred.Login == "" || (cred.Password == "" && cred.PrivateKey == "") {
		return nil, nil, fmt.Errorf("step %d: admin record %q of %q needs a login and a password or private key", step.Index, admin.UID, m.UID)
	}
	return &messages.Connection{
		Protocol: c.Protocol, Host: c.Host, Port: c.Port, HTTPS: c.HTTPS,
		KnownHosts: string(c.KnownHostsData), HostKey: c.HostKey, CACert: string(c.CACertData),
		InsecureIgnoreHostKey: c.InsecureIgnoreHostKey,
	}, cred, nil
}

// failed is the result of a step that did not run.
func (d *Dispatcher) failed(r Rotation, step plan.Step, reason string) messages.RotationResult {
	now := d.opts.Now()
	return messages.RotationResult{
		UID: step.RecordUID, Title: step.Script.Title, Name: step.Script.Name,
		SchemaVersion: messages.SchemaVersion, RotationID: r.ID, Step: step.Index, Host: step.Host,
		ExitCode: -1, StartedAt: now, FinishedAt: now, Error: reason,
	}
}

// withdraw removes a task that no worker of host has taken yet from the
// work queue and reports false; it reports true when a worker took it. A
// worker that would receive it after the check refuses it as expired.
func (d *Dispatcher) withdraw(ctx context.Context, host string, seq uint64) (taken bool, err error) {
	subj := d.opts.Layout.Subjects
	cons, err := d.js.Consumer(ctx, subj.TasksStream(), subj.Consumer(host))
	if err != nil {
		return false, err
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return false, err
	}
	if info.Delivered.Stream >= seq {
		return true, nil
	}
	stream, err := d.js.Stream(ctx, subj.TasksStream())
	if err != nil {
		return false, err
	}
	if err := stream.DeleteMsg(ctx, seq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
		return false, err
	}
	return false, nil
}

// storedResult reads the result of a step from the results stream.
func (d *Dispatcher) storedResult(ctx context.Context, rotationID string, step int) (messages.RotationResult, error) {
	subj := d.opts.Layout.Subjects
	s, err := d.js.Stream(ctx, subj.ResultsStream())
	if err != nil {
		return messages.RotationResult{}, err
	}
	msg, err := s.GetLastMsgForSubject(ctx, subj.Result(rotationID, step))
	if err != nil {
		return messages.RotationResult{}, err
	}
	return messages.DecodeResult(msg.Data)
}

// Results returns the stored results of a rotation's steps 1..steps, in
// order; steps without a result yet are left out.
func (d *Dispatcher) Results(ctx context.Context, rotationID string, steps int) ([]messages.RotationResult, error) {
	var out []messages.RotationResult
	for i := 1; i <= steps; i++ {
		rr, err := d.storedResult(ctx, rotationID, i)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return out, fmt.Errorf("read result of step %d: %w", i, err)
		}
		out = append(out, rr)
	}
	return out, nil
}

func (d *Dispatcher) publishResult(ctx context.Context, rr messages.RotationResult) (*jetstream.PubAck, error) {
	msgID := messages.ResultMsgID(rr.RotationID, rr.Step)
	data, err := messages.EncodeResultWithin(rr, messages.ResultLimit(d.js.Conn().MaxPayload(), msgID))
	if err != nil {
		return nil, err
	}
	return d.js.Publish(ctx, d.opts.Layout.Subjects.Result(rr.RotationID, rr.Step), data, jetstream.WithMsgID(msgID))
}

// event publishes an event; a lost event is logged, never fatal.
func (d *Dispatcher) event(ctx context.Context, log zerolog.Logger, subject string, ev any) {
	switch e := ev.(type) {
	case messages.RotationEvent:
		e.SchemaVersion, e.Time = messages.SchemaVersion, d.opts.Now()
		ev = e
	case messages.StepEvent:
		e.SchemaVersion, e.Time = messages.SchemaVersion, d.opts.Now()
		ev = e
	}
	data, err := json.Marshal(ev)
	if err != nil {
		log.Error().Err(err).Str("subject", subject).Msg("encode event")
		return
	}
	// An event must not hold a rotation up for long: a few short attempts.
	ctx, cancel := context.WithTimeout(ctx, 3*publishAttempt)
	defer cancel()
	if _, err := d.retry(ctx, log, "publish event "+subject, func(ctx context.Context) (*jetstream.PubAck, error) {
		return d.js.Publish(ctx, subject, data)
	}); err != nil {
		log.Error().Err(err).Str("subject", subject).Msg("event lost")
	}
}

// Abandon ends rotation id of user, which cannot be resumed (why: its plan
// changed, its passwords are gone): each of steps without a stored result
// gets a failed result naming why, published with its step event; then
// before stores the outcome (Sent: a previous coordinator may have
// published any task), and only then is the rotation's failed event
// published. It returns before's error, or the error of a publish when
// ctx ended first.
func (d *Dispatcher) Abandon(ctx context.Context, id, user string, steps []plan.Step, why string, before func(Outcome) error) (Outcome, error) {
	out := Outcome{RotationID: id, Sent: true, Effect: EffectNotCommitted, Note: why}
	log := d.log.With().Str("rotation_id", id).Str("user_uid", user).Logger()
	r := Rotation{ID: id}
	for _, step := range steps {
		rr, err := d.storedResult(ctx, id, step.Index)
		if err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
			return out, fmt.Errorf("read stored result of step %d: %w", step.Index, err)
		}
		if err != nil {
			rr = d.failed(r, step, "no result (its task may have run before): "+why)
			if err := d.report(ctx, log, step, rr); err != nil {
				return out, err
			}
		}
		out.add(rr)
		if !rr.Success {
			out.Unresolved++
		}
	}
	if err := before(out); err != nil {
		return out, err
	}
	d.event(ctx, log, d.opts.Layout.Subjects.RotationEvent(messages.EventFailed), messages.RotationEvent{
		Kind: messages.EventFailed, RotationID: id, UserRecordUID: user, Steps: len(out.Results),
		Succeeded: out.Succeeded, Failed: out.Failed, Effect: string(out.Effect), Error: why,
	})
	log.Warn().Str("why", why).Msg("rotation abandoned")
	return out, nil
}
