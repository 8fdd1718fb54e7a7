package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/postrotate/postrotate/executor"
	"github.com/postrotate/postrotate/messages"
)

// message is the slice of jetstream.Msg the worker uses, so tests can hand
// it a recorder.
type message interface {
	Data() []byte
	Headers() nats.Header
	Metadata() (*jetstream.MsgMetadata, error)
	InProgress() error
	DoubleAck(ctx context.Context) error
	NakWithDelay(delay time.Duration) error
	TermWithReason(reason string) error
}

// disposition is what happens to a task message once it is handled.
type disposition int

const (
	ack   disposition = iota // handled, its result is published
	nak                      // not run: deliver it again after NakDelay
	term                     // never deliver again: it is not a task
	leave                    // result not published: let it be redelivered
)

// handle processes one task message from start to end.
func (w *Worker) handle(ctx context.Context, msg message) {
	attempt, seq := 1, uint64(0)
	if md, err := msg.Metadata(); err == nil {
		attempt, seq = int(md.NumDelivered), md.Sequence.Stream
	}
	var task messages.Task
	if w.opts.Trust != nil {
		var a admission
		task, a = w.admit(ctx, msg, seq)
		switch a.do {
		case rejected:
			w.reject(ctx, msg, seq, attempt, a.reason)
			return
		case invalid:
			w.finish(ctx, msg, w.undecodable(ctx, msg.Data(), attempt, a.cause), termInvalid)
			return
		case retryLater:
			w.log.Warn().Err(a.cause).Uint64("stream_seq", seq).Dur("retry_in", w.opts.NakDelay).Msg("task not run: its replay check is unavailable")
			w.finish(ctx, msg, nak, "")
			return
		}
	} else {
		var err error
		if task, err = messages.DecodeTask(msg.Data()); err != nil {
			w.finish(ctx, msg, w.undecodable(ctx, msg.Data(), attempt, err), termInvalid)
			return
		}
	}
	log := w.log.With().Str("rotation_id", task.RotationID).Int("step", task.Step).Int("attempt", attempt).Logger()
	log.Debug().Str("uid", task.RecordUID).Str("script", task.Script.Name).Msg("task received")

	v := w.decide(ctx, task, attempt)
	switch v.do {
	case retryIt:
		log.Warn().Err(v.cause).Dur("retry_in", w.opts.NakDelay).Msg("task not run: its started marker is unavailable")
		w.finish(ctx, msg, nak, "")
		return
	case refuseIt:
		log.Warn().Str("reason", v.reason).Msg("task refused")
		w.finish(ctx, msg, w.publish(ctx, log, task, w.notRun(task, attempt, v.reason)), "")
		return
	case ackIt:
		log.Info().Msg("task already run and reported; acknowledged")
		w.finish(ctx, msg, ack, "")
		return
	}
	if v.prev != nil {
		log.Warn().Str("started_by", v.prev.Worker).Time("started_at", v.prev.StartedAt).Int("started_attempt", v.prev.Attempt).
			Msg("script was interrupted; running it again (retry_on_interrupt)")
	}
	// Said before the script runs: if this worker dies, its log shows
	// what it had started.
	log.Info().Str("uid", task.RecordUID).Str("script", task.Script.Name).Str("runner", task.Runner).Str("target", task.Target).Msg("script started")
	// The task stays in progress until it is acknowledged: while the
	// result is retried across a broker restart, it is not redelivered
	// (to the host's other worker, which would report it in doubt).
	stopProgress := keepInProgress(log, msg, w.opts.InProgressEvery)
	defer stopProgress()
	res := w.run(ctx, log, task, attempt)
	d := w.publish(ctx, log, task, res)
	if d == ack {
		w.reported(ctx, log, task, v)
	}
	w.finish(ctx, msg, d, "")
}

// reported records in the task's started marker that its result is
// published, retried like the result: with the result out and the ack
// lost too, the marker is what makes the redelivery an ack instead of "in
// doubt". A failure loses only that: the result is in the stream, and a
// redelivery's in-doubt result, under the same message id, is dropped
// (within the stream's duplicate window, 1h by default).
func (w *Worker) reported(ctx context.Context, log zerolog.Logger, task messages.Task, v verdict) {
	a := attempts{until: time.Now().Add(reportWithin), timeout: markerTimeout, maxTimeout: markerTimeout}
	err := w.retry(ctx, a, func(ctx context.Context) error {
		err := w.markReported(ctx, task, v)
		var api *jetstream.APIError
		if errors.As(err, &api) && api.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence {
			// An earlier attempt's write may have been stored, its reply
			// lost: then the marker holds this run's report.
			if w.markedReported(ctx, task, v) {
				return nil
			}
			return permanentError{err}
		}
		return err
	}, func(err error, retryIn time.Duration) {
		log.Warn().Err(err).Dur("retry_in", retryIn).Msg("mark task reported")
	})
	if err != nil {
		log.Warn().Err(err).Msg("task not marked reported: a redelivery of it would be reported in doubt, its result kept")
	}
}

// markedReported says whether task's marker holds the report of v's run.
func (w *Worker) markedReported(ctx context.Context, task messages.Task, v verdict) bool {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), markerTimeout)
	defer cancel()
	kv, err := w.startedBucket(ctx)
	if err != nil {
		return false
	}
	entry, err := w.startedGet(ctx, kv, startedKey(task.ID))
	if err != nil {
		return false
	}
	var m messages.StartedMarker
	return json.Unmarshal(entry.Value(), &m) == nil && m.Worker == v.marker.Worker && m.Attempt == v.marker.Attempt &&
		m.StartedAt.Equal(v.marker.StartedAt) && !m.ReportedAt.IsZero()
}

// reportWithin bounds the retries of marking a task reported.
const reportWithin = 30 * time.Second

// ackWithin bounds the retries of acknowledging a handled task. A task
// whose ack is lost is redelivered and, its marker saying it is reported,
// acknowledged then.
const ackWithin = 30 * time.Second

// termInvalid is the term reason of a message that is not a valid task.
const termInvalid = "not a valid task"

// finish applies the disposition to the message: the one place that
// decides between ack, nak and term. why is the reason given with a term;
// it names a check, never the task's content.
func (w *Worker) finish(ctx context.Context, msg message, d disposition, why string) {
	var err error
	switch d {
	case ack:
		// Confirmed by the broker, in short attempts: one lost to a
		// broker restart is made again once the worker has reconnected.
		// A hard stop still leaves it hardStopGrace.
		a := attempts{until: time.Now().Add(ackWithin), timeout: w.opts.PublishAttemptTimeout, maxTimeout: w.opts.PublishAttemptTimeout}
		err = w.retry(ctx, a, func(ctx context.Context) error {
			if err := msg.DoubleAck(ctx); !errors.Is(err, jetstream.ErrMsgAlreadyAckd) {
				return err
			}
			return nil
		}, func(err error, retryIn time.Duration) {
			w.log.Warn().Err(err).Dur("retry_in", retryIn).Msg("acknowledge task")
		})
	case nak:
		err = msg.NakWithDelay(w.opts.NakDelay)
	case term:
		err = msg.TermWithReason("postrotate: " + why)
	case leave:
		return
	}
	if err != nil {
		w.log.Error().Err(err).Msg("acknowledge task")
	}
}

// refusal returns why the task can never run on this worker, or "".
// Expiry is decided with the started marker (see decide): an expired task
// that was started is in doubt rather than merely expired.
func (w *Worker) refusal(task messages.Task) string {
	switch {
	case task.Host != w.opts.Host:
		return fmt.Sprintf("task is for host %q, this worker serves %q", task.Host, w.opts.Host)
	case w.opts.Executors[task.Runner] == nil:
		return fmt.Sprintf("this worker has no %q runner", task.Runner)
	case task.Secret == nil:
		// Only a worker without Trust gets here with a sealed secret.
		return "the task secret is sealed and this worker has no key to open it: start it with credentials"
	}
	return ""
}

// keepInProgress extends msg's ack deadline every interval until the
// returned function is called.
func keepInProgress(log zerolog.Logger, msg message, every time.Duration) (stop func()) {
	tick := time.NewTicker(every)
	done := make(chan struct{})
	ended := make(chan struct{})
	go func() {
		defer close(ended)
		for {
			select {
			case <-done:
				return
			case <-tick.C:
				// Acknowledged meanwhile: nothing left to extend.
				if err := msg.InProgress(); err != nil && !errors.Is(err, jetstream.ErrMsgAlreadyAckd) {
					log.Warn().Err(err).Msg("extend task ack deadline")
				}
			}
		}
	}()
	return func() {
		tick.Stop()
		close(done)
		<-ended
	}
}

// run executes the task's script.
func (w *Worker) run(ctx context.Context, log zerolog.Logger, task messages.Task, attempt int) messages.RotationResult {
	res, err := w.opts.Executors[task.Runner].Run(ctx, jobOf(task, attempt))

	rr := w.base(task, attempt)
	rr.Command = res.Command
	rr.System = res.System
	rr.ExitCode = res.ExitCode
	rr.Stdout, rr.Stderr = res.Stdout, res.Stderr
	rr.StdoutTruncated, rr.StderrTruncated = res.StdoutTruncated, res.StderrTruncated
	rr.StartedAt, rr.FinishedAt = res.StartedAt, res.FinishedAt
	if !res.StartedAt.IsZero() && !res.FinishedAt.IsZero() {
		rr.DurationMS = res.FinishedAt.Sub(res.StartedAt).Milliseconds()
	}
	rr.Error = res.Error
	if err != nil && rr.Error == "" {
		rr.Error = executor.NewMasker(task.Secret.Mask...).Mask(err.Error())
	}
	rr.Success = err == nil && res.Success()
	log.Info().Bool("success", rr.Success).Int("exit_code", rr.ExitCode).Int64("duration_ms", rr.DurationMS).
		Bool("timed_out", res.TimedOut).Msg("script finished")
	return rr
}

func (w *Worker) base(task messages.Task, attempt int) messages.RotationResult {
	return messages.RotationResult{
		UID:           task.RecordUID,
		Title:         task.Script.Title,
		Name:          task.Script.Name,
		SchemaVersion: messages.SchemaVersion,
		RotationID:    task.RotationID,
		Step:          task.Step,
		Host:          task.Host,
		Worker:        w.opts.Name,
		Attempt:       attempt,
		ExitCode:      -1,
	}
}

// notRun is the result of a task whose script was not started.
func (w *Worker) notRun(task messages.Task, attempt int, reason string) messages.RotationResult {
	rr := messages.NotRun(task, reason, w.opts.Now())
	rr.Worker, rr.Attempt = w.opts.Name, attempt
	return rr
}

// undecodable reports a message that is not a valid task. When its rotation
// and step can still be read, a failed result tells the coordinator, so the
// rotation does not wait for a deadline.
func (w *Worker) undecodable(ctx context.Context, data []byte, attempt int, cause error) disposition {
	w.log.Error().Err(cause).Int("bytes", len(data)).Msg("invalid task terminated")
	var head struct {
		RotationID string `json:"rotation_id"`
		Step       int    `json:"step"`
		ID         string `json:"id"`
	}
	if json.Unmarshal(data, &head) == nil && messages.ValidToken(head.RotationID) && head.Step > 0 {
		task := messages.Task{RotationID: head.RotationID, Step: head.Step, Host: w.opts.Host, ID: head.ID}
		rr := w.notRun(task, attempt, "refused: "+cause.Error())
		w.publish(ctx, w.log, task, rr)
	}
	return term
}

// jobOf turns a task into the executor's job.
func jobOf(task messages.Task, attempt int) executor.Job {
	job := executor.Job{
		RotationID: task.RotationID,
		Step:       task.Step,
		Attempt:    attempt,
		Script: executor.Script{
			Name:    task.Script.Name,
			Content: task.Script.Content,
			Command: task.Script.Command,
			Timeout: task.Script.Timeout(),
		},
		Stdin:   task.Secret.Stdin,
		Secrets: task.Secret.Mask,
	}
	if c, cred := task.Connection, task.Secret.Credential; c != nil && cred != nil {
		job.Target = &executor.Target{
			Host: c.Host, Port: c.Port, HTTPS: c.HTTPS,
			Login: cred.Login, Password: cred.Password, PrivateKey: cred.PrivateKey, Passphrase: cred.Passphrase,
			KnownHosts: c.KnownHosts, HostKey: c.HostKey, CACert: c.CACert, InsecureIgnoreHostKey: c.InsecureIgnoreHostKey,
		}
	}
	if r := task.Request; r != nil {
		job.Request = &executor.Request{Method: r.Method, URL: r.URL, Headers: r.Headers, Body: r.Body, ExpectStatus: r.ExpectStatus}
	}
	if r := task.Rotation; r != nil {
		job.Rotation = &executor.Rotation{
			Kind: r.Kind, Login: r.Login, Database: r.Database, SSLMode: r.SSLMode,
			NewPassword: task.Secret.NewPassword, OldPassword: task.Secret.OldPassword,
		}
	}
	return job
}
