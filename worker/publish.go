package worker

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/postrotate/postrotate/executor"
	"github.com/postrotate/postrotate/messages"
)

// coordinatorKillGrace is the coordinator's default kill grace
// (coordinator/dispatch Options.KillGrace): a step's deadline is its task's
// expiry plus the script's timeout plus this.
const coordinatorKillGrace = 30 * time.Second

// stepDeadline is when the coordinator stops waiting for task's result:
// a script started before the task expired, ran at most its timeout, and
// had the kill grace to be killed and reported. Then the coordinator
// publishes a failed result in its place, under the same message id, so
// that a later worker result is dropped: trying longer is of no use.
func stepDeadline(task messages.Task) time.Time {
	if task.ExpiresAt.IsZero() {
		return time.Time{}
	}
	return task.ExpiresAt.Add(task.Script.Timeout() + coordinatorKillGrace)
}

// publish sends the result of task's step until the stream has it: see
// publishUntil, with the step's deadline.
func (w *Worker) publish(ctx context.Context, log zerolog.Logger, task messages.Task, rr messages.RotationResult) disposition {
	return w.publishUntil(ctx, log, w.opts.Subjects.Result(task.RotationID, task.Step), messages.ResultMsgID(task.RotationID, task.Step), rr,
		stepDeadline(task))
}

// publishTo sends rr on subject with message id msgID: see publishUntil,
// with no step deadline.
func (w *Worker) publishTo(ctx context.Context, log zerolog.Logger, subject, msgID string, rr messages.RotationResult) disposition {
	return w.publishUntil(ctx, log, subject, msgID, rr, time.Time{})
}

// publishUntil sends rr on subject with message id msgID, in attempts of
// PublishAttemptTimeout retried until the later of deadline and
// PublishTimeout from now: the message id makes a retry whose first copy
// was stored (its ack lost) a no-op on the stream. rr is encoded within
// the connection's max_payload, its outputs shortened if need be (again
// after a reconnect to a server with another limit). It returns ack once
// the stream has the result, leave when it gave up.
func (w *Worker) publishUntil(ctx context.Context, log zerolog.Logger, subject, msgID string, rr messages.RotationResult, deadline time.Time) disposition {
	nc := w.js.Conn()
	var data []byte
	limit := -1
	try := func(ctx context.Context) error {
		if l := messages.ResultLimit(nc.MaxPayload(), msgID); l != limit {
			d, err := w.encodeResult(log, rr, l)
			if err != nil {
				return permanentError{err}
			}
			data, limit = d, l
		}
		ack, err := w.js.Publish(ctx, subject, data, jetstream.WithMsgID(msgID))
		if err != nil {
			return err
		}
		if ack.Duplicate {
			log.Info().Str("msg_id", msgID).Msg("result already stored: an earlier attempt's ack was lost, or the coordinator reported the step first")
		}
		return nil
	}
	until := time.Now().Add(w.opts.PublishTimeout)
	if deadline.After(until) {
		until = deadline
	}
	a := attempts{until: until, timeout: w.opts.PublishAttemptTimeout, maxTimeout: maxAttemptGrowth * w.opts.PublishAttemptTimeout}
	err := w.retry(ctx, a, try, func(err error, retryIn time.Duration) {
		log.Warn().Err(err).Dur("retry_in", retryIn).Msg("publish result")
	})
	if err != nil {
		log.Error().Err(err).Time("gave_up_at", time.Now()).Msg("result not published; the task stays unacknowledged")
		return leave
	}
	return ack
}

// maxAttemptGrowth bounds how much longer than PublishAttemptTimeout an
// attempt may take after attempts that timed out.
const maxAttemptGrowth = 8

// encodeResult encodes rr within limit bytes, saying so when its outputs
// had to be shortened.
func (w *Worker) encodeResult(log zerolog.Logger, rr messages.RotationResult, limit int) ([]byte, error) {
	full, err := json.Marshal(rr)
	if err != nil {
		return nil, fmt.Errorf("encode result: %w", err)
	}
	if len(full) <= limit {
		return full, nil
	}
	data, err := messages.EncodeResultWithin(rr, limit)
	if err != nil {
		return nil, fmt.Errorf("encode result within the server's max_payload: %w", err)
	}
	log.Warn().Int("bytes", len(full)).Int("limit", limit).Int("shortened_to", len(data)).
		Msg("result output shortened to fit the server's max_payload")
	return data, nil
}

// defaultResultSize is about what a result whose two outputs are at the
// executors' default cap takes: 2 × 1 MiB of plain text, the other fields
// and the headers. Escaped characters make it larger still.
const defaultResultSize = 2*executor.DefaultOutputLimit + 2*messages.ResultHeaderRoom + 1<<10

// WarnMaxPayload logs, once at start of a worker or a coordinator, when
// the server's max_payload is below what a result with two full
// default-capped outputs needs.
func WarnMaxPayload(log zerolog.Logger, nc *nats.Conn) {
	if nc == nil {
		return
	}
	if mp := nc.MaxPayload(); mp < defaultResultSize {
		log.Warn().Int64("max_payload", mp).Int("output_cap", executor.DefaultOutputLimit).
			Msg("the NATS server's max_payload is below two capped outputs: results with more output are shortened to fit it " +
				"(head and tail kept); to keep them whole, raise max_payload in the server's configuration, e.g. max_payload: 8MB")
	}
}
