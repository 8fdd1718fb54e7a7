package dispatch

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/postrotate/postrotate/coordinator/rotation"
	"github.com/postrotate/postrotate/messages"
	"github.com/postrotate/postrotate/messages/envelope"
)

// Options configure a Dispatcher. A zero field means its default.
type Options struct {
	// Subjects names the streams and buckets of the layout
	// (messages/layout), which the dispatcher does not create.
	Subjects messages.Subjects
	// KillGrace is added to a step's deadline (its task's expiry plus its
	// script's timeout) for the worker to kill a timed-out script and
	// report. Defaults to 30s.
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

// Dispatcher sends the tasks of rotation steps over JetStream and brings
// back their results: the engine's rotation.StepRunner.
type Dispatcher struct {
	js   jetstream.JetStream
	opts Options
	log  zerolog.Logger

	mu      sync.Mutex
	watches map[string]*resultWatch // by rotation id, between Begin and its end
}

var _ rotation.StepRunner = (*Dispatcher)(nil)

// New returns a dispatcher. It does not create streams: call
// layout.Layout.Setup.
func New(js jetstream.JetStream, opts Options) *Dispatcher {
	opts.KillGrace = cmp.Or(opts.KillGrace, 30*time.Second)
	if opts.Now == nil {
		opts.Now = time.Now
	}
	log := zerolog.Nop()
	if opts.Logger != nil {
		log = *opts.Logger
	}
	return &Dispatcher{js: js, opts: opts, log: log.With().Str("component", "dispatcher").Logger(), watches: map[string]*resultWatch{}}
}

// Begin starts watching the results of rotation id (and, with a Signer,
// the refusals of its tasks) until end.
func (d *Dispatcher) Begin(ctx context.Context, rotationID string) (end func(), err error) {
	w, err := d.watchResults(ctx, rotationID)
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	d.watches[rotationID] = w
	d.mu.Unlock()
	return func() {
		d.mu.Lock()
		delete(d.watches, rotationID)
		d.mu.Unlock()
		w.Stop()
	}, nil
}

// Send publishes task — with a Signer, its secret sealed for its host's
// worker and the data signed — and waits for the step's result or
// deadline (see rotation.StepRunner). A task that cannot be sealed for its
// host is not sent: its step gets a failed result, published.
func (d *Dispatcher) Send(ctx context.Context, task messages.Task) (messages.RotationResult, bool, error) {
	log := d.log.With().Str("rotation_id", task.RotationID).Int("step", task.Step).Str("host", task.Host).Logger()
	d.mu.Lock()
	results := d.watches[task.RotationID]
	d.mu.Unlock()
	if results == nil {
		return messages.RotationResult{}, false, fmt.Errorf("rotation %s: send before Begin", task.RotationID)
	}
	msg, err := d.message(ctx, task)
	var lookup errLookup
	if errors.As(err, &lookup) {
		return messages.RotationResult{}, false, err
	}
	if err != nil {
		// Nothing was sent: this step's failure, not the rotation's.
		log.Error().Err(err).Msg("step not sent")
		rr := messages.NotRun(task, err.Error(), d.opts.Now())
		return rr, false, d.Report(ctx, rr)
	}
	return d.send(ctx, log, task, msg, results)
}

// send publishes msg, the message of task, and waits for its result or
// deadline. From the publish on, a target may receive the new password
// (reached), unless the task is withdrawn from the queue untaken.
func (d *Dispatcher) send(ctx context.Context, log zerolog.Logger, task messages.Task, msg *nats.Msg, results *resultWatch) (messages.RotationResult, bool, error) {
	subj := d.opts.Subjects
	ack, err := retry(ctx, log, "publish task", func(ctx context.Context) (*jetstream.PubAck, error) {
		return d.js.PublishMsg(ctx, msg, jetstream.WithMsgID(task.ID))
	})
	if err != nil {
		return messages.RotationResult{}, true, fmt.Errorf("publish task of step %d: %w", task.Step, err)
	}
	d.event(ctx, log, subj.StepEvent(messages.EventStarted), messages.StepEvent{
		Kind: messages.EventStarted, RotationID: task.RotationID, Step: task.Step, Host: task.Host, UID: task.RecordUID, Name: task.Script.Name,
	})
	log.Debug().Str("script", task.Script.Name).Msg("task published")

	// First deadline: a worker must have taken the task by its expiry.
	want := expect{step: task.Step, host: task.Host, seq: ack.Sequence}
	reached := true
	rr, err := results.wait(ctx, want, task.ExpiresAt)
	deadline := task.ExpiresAt.Add(task.Script.Timeout() + d.opts.KillGrace)
	if errors.Is(err, errDeadline) {
		if taken, terr := d.withdraw(ctx, task.Host, ack.Sequence); terr != nil {
			log.Warn().Err(terr).Msg("check task pickup")
		} else if !taken {
			deadline = time.Now() // withdrawn: it can never run
			reached = false
		}
		rr, err = results.wait(ctx, want, deadline)
	}
	var refused *RefusedError
	switch {
	case errors.As(err, &refused):
		// The worker found this very message wanting (a secret sealed for
		// a key it no longer has, a clock far off...): the step fails now.
		rr = messages.NotRun(task, refused.Error(), d.opts.Now())
		rr.Worker = refused.Worker
		log.Warn().Str("reason", refused.Reason).Msg("task refused by its worker")
		return rr, reached, d.Report(ctx, rr)
	case errors.Is(err, errDeadline):
		rr = messages.NotRun(task, fmt.Sprintf("no result from host %q by %s: no live worker of that host took the task within %s, or it did not report",
			task.Host, deadline.UTC().Format(time.RFC3339), task.ExpiresAt.Sub(task.CreatedAt)), d.opts.Now())
		// First result wins: a late worker result for this step is dropped as a duplicate.
		log.Warn().Msg("step deadline passed")
		return rr, reached, d.Report(ctx, rr)
	case err != nil:
		return messages.RotationResult{}, reached, err
	}
	d.stepEvent(ctx, log, task, rr)
	return rr, reached, nil
}

// Report publishes rr, the result the coordinator gives a step (not run,
// not sent, refused, no result by its deadline), and its step event. It
// retries until ctx ends, and then returns the error: the rotation is cut
// short and resumed later, and this step's result published then.
func (d *Dispatcher) Report(ctx context.Context, rr messages.RotationResult) error {
	log := d.log.With().Str("rotation_id", rr.RotationID).Int("step", rr.Step).Str("host", rr.Host).Logger()
	if _, err := retry(ctx, log, "publish result", func(ctx context.Context) (*jetstream.PubAck, error) {
		return d.publishResult(ctx, rr)
	}); err != nil {
		return fmt.Errorf("publish the result of step %d: %w", rr.Step, err)
	}
	d.stepEvent(ctx, log, messages.Task{RotationID: rr.RotationID, Step: rr.Step, Host: rr.Host, RecordUID: rr.UID, Script: messages.Script{Name: rr.Name}}, rr)
	return nil
}

// stepEvent publishes the completed or failed event of the step of task
// (what identifies the step comes from the task the coordinator sent,
// whatever a result claims), with rr's outcome.
func (d *Dispatcher) stepEvent(ctx context.Context, log zerolog.Logger, task messages.Task, rr messages.RotationResult) {
	kind := messages.EventCompleted
	if !rr.Success {
		kind = messages.EventFailed
	}
	d.event(ctx, log, d.opts.Subjects.StepEvent(kind), messages.StepEvent{
		Kind: kind, RotationID: task.RotationID, Step: task.Step, Host: task.Host, UID: task.RecordUID, Name: task.Script.Name,
		Success: rr.Success, Error: rr.Error,
	})
}

// Attempts of a call to JetStream (a publish, a lookup): each is short, so
// that a lost answer (a broker restarting, a leader moving) costs one
// attempt, not the whole wait.
const (
	callAttempt    = 5 * time.Second
	maxCallBackoff = 5 * time.Second
)

// retry calls call with a short deadline per attempt until it succeeds or
// ctx ends (the coordinator stopping, a step's own deadline). A publish
// with a message id is idempotent: the stream drops a duplicate of a
// message that arrived.
func retry[T any](ctx context.Context, log zerolog.Logger, what string, call func(context.Context) (T, error)) (T, error) {
	backoff := time.Duration(0)
	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, callAttempt)
		v, err := call(actx)
		cancel()
		if err == nil {
			if attempt > 1 {
				log.Info().Int("attempt", attempt).Msg(what + ": succeeded after retries")
			}
			return v, nil
		}
		backoff = min(max(2*backoff, 100*time.Millisecond), maxCallBackoff)
		log.Warn().Err(err).Int("attempt", attempt).Dur("retry_in", backoff).Msg(what)
		select {
		case <-ctx.Done():
			var zero T
			return zero, errors.Join(err, ctx.Err())
		case <-time.After(backoff):
		}
	}
}

// message returns the message that carries task: with a Signer its secret
// sealed for the host's worker and the data signed, else the task as it is.
func (d *Dispatcher) message(ctx context.Context, task messages.Task) (*nats.Msg, error) {
	msg := &nats.Msg{Subject: d.opts.Subjects.Tasks(task.Host), Header: nats.Header{}}
	if d.opts.Signer != nil {
		key, err := d.workerKey(ctx, task.Host, task.ExpiresAt)
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

// workerKey returns the curve key of host's worker. A lookup that fails
// (the store not answering, as while a cluster node is lost) is tried again
// with short attempts until the task would expire anyway: then the step
// fails, not sent. When ctx ends first, the rotation is cut short
// (errLookup) and the step sent when it is resumed.
func (d *Dispatcher) workerKey(ctx context.Context, host string, until time.Time) (string, error) {
	noKey := fmt.Errorf("host %q has %w: run postrotate worker add %s", host, ErrNoWorkerKey, host)
	if d.opts.WorkerKey == nil {
		return "", noKey
	}
	lctx, cancel := context.WithDeadline(ctx, until)
	defer cancel()
	key, err := retry(lctx, d.log.With().Str("host", host).Logger(), "look up the worker key", func(ctx context.Context) (string, error) {
		key, err := d.opts.WorkerKey(ctx, host)
		if errors.Is(err, ErrNoWorkerKey) {
			return "", nil // an answer: none
		}
		return key, err
	})
	switch {
	case err != nil && ctx.Err() != nil:
		return "", errLookup{fmt.Errorf("look up the worker key of host %q: %w", host, err)}
	case err != nil:
		return "", fmt.Errorf("look up the worker key of host %q: %w", host, err)
	case key == "":
		return "", noKey
	}
	return key, nil
}

// errLookup is a lookup that did not succeed before the rotation's context
// ended: the rotation is cut short, the step is not failed.
type errLookup struct{ error }

func (e errLookup) Unwrap() error { return e.error }

// withdraw removes a task that no worker of host has taken yet from the
// work queue and reports false; it reports true when a worker took it. A
// worker that would receive it after the check refuses it as expired.
func (d *Dispatcher) withdraw(ctx context.Context, host string, seq uint64) (taken bool, err error) {
	subj := d.opts.Subjects
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

// Result reads the result of a rotation's step from the results stream;
// found is false when the step has none.
func (d *Dispatcher) Result(ctx context.Context, rotationID string, step int) (messages.RotationResult, bool, error) {
	subj := d.opts.Subjects
	s, err := d.js.Stream(ctx, subj.ResultsStream())
	if err != nil {
		return messages.RotationResult{}, false, err
	}
	msg, err := s.GetLastMsgForSubject(ctx, subj.Result(rotationID, step))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return messages.RotationResult{}, false, nil
	}
	if err != nil {
		return messages.RotationResult{}, false, err
	}
	rr, err := messages.DecodeResult(msg.Data)
	return rr, err == nil, err
}

// Announce publishes a rotation event; a lost event is logged.
func (d *Dispatcher) Announce(ctx context.Context, ev messages.RotationEvent) {
	log := d.log.With().Str("rotation_id", ev.RotationID).Logger()
	d.event(ctx, log, d.opts.Subjects.RotationEvent(ev.Kind), ev)
}

func (d *Dispatcher) publishResult(ctx context.Context, rr messages.RotationResult) (*jetstream.PubAck, error) {
	msgID := messages.ResultMsgID(rr.RotationID, rr.Step)
	data, err := messages.EncodeResultWithin(rr, messages.ResultLimit(d.js.Conn().MaxPayload(), msgID))
	if err != nil {
		return nil, err
	}
	return d.js.Publish(ctx, d.opts.Subjects.Result(rr.RotationID, rr.Step), data, jetstream.WithMsgID(msgID))
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
	ctx, cancel := context.WithTimeout(ctx, 3*callAttempt)
	defer cancel()
	if _, err := retry(ctx, log, "publish event "+subject, func(ctx context.Context) (*jetstream.PubAck, error) {
		return d.js.Publish(ctx, subject, data)
	}); err != nil {
		log.Error().Err(err).Str("subject", subject).Msg("event lost")
	}
}

// Workers returns the registered, live workers: the entries of the workers
// bucket, which expire without heartbeats.
func (d *Dispatcher) Workers(ctx context.Context) ([]messages.WorkerInfo, error) {
	kv, err := d.js.KeyValue(ctx, d.opts.Subjects.WorkersBucket())
	if err != nil {
		return nil, fmt.Errorf("open workers bucket: %w", err)
	}
	keys, err := kv.ListKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("list workers: %w", err)
	}
	var out []messages.WorkerInfo
	for k := range keys.Keys() {
		e, err := kv.Get(ctx, k)
		if err != nil {
			continue // expired meanwhile
		}
		var wi messages.WorkerInfo
		if json.Unmarshal(e.Value(), &wi) == nil {
			out = append(out, wi)
		}
	}
	return out, nil
}
