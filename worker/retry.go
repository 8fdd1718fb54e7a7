package worker

import (
	"context"
	"errors"
	"time"

	"github.com/nats-io/nats.go"
)

// hardStopGrace is how long a hard stop leaves a finished script's report
// (its result, marker and ack) to reach the broker.
const hardStopGrace = 5 * time.Second

// attempts say how retry tries: until when, and how long one attempt may
// take.
type attempts struct {
	// until ends the tries; a hard stop brings it to hardStopGrace later.
	until time.Time
	// timeout bounds one attempt. After an attempt that used it all, the
	// next may take twice as long, up to maxTimeout.
	timeout, maxTimeout time.Duration
}

// permanentError marks an error no later attempt can avoid.
type permanentError struct{ err error }

func (e permanentError) Error() string { return e.err.Error() }
func (e permanentError) Unwrap() error { return e.err }

// retry calls try until it returns nil, with short attempts: an attempt
// that gets no answer (an ack lost to a broker restart) is abandoned after
// its timeout and made again, instead of holding the whole budget. While
// the connection is down it waits for it rather than queueing copies. It
// stops on a permanent error or a closed connection, or when a.until
// passes, and returns the last error; failed hears of each failed attempt
// that is tried again, and when. ctx ending is a hard stop: the tries go
// on for hardStopGrace.
func (w *Worker) retry(ctx context.Context, a attempts, try func(context.Context) error, failed func(err error, retryIn time.Duration)) error {
	if soon := time.Now().Add(hardStopGrace); ctx.Err() != nil && a.until.After(soon) {
		a.until = soon
	}
	rctx, cancel := context.WithDeadline(context.WithoutCancel(ctx), a.until)
	defer cancel()
	if ctx.Err() == nil {
		stop := context.AfterFunc(ctx, func() {
			t := time.NewTimer(hardStopGrace)
			defer t.Stop()
			select {
			case <-t.C:
				cancel()
			case <-rctx.Done():
			}
		})
		defer stop()
	}
	nc := w.js.Conn()
	timeout := a.timeout
	var backoff time.Duration
	for {
		awaitConnected(rctx, nc)
		actx, cancelAttempt := context.WithTimeout(rctx, timeout)
		err := try(actx)
		timedOut := errors.Is(actx.Err(), context.DeadlineExceeded) && rctx.Err() == nil
		cancelAttempt()
		if err == nil {
			return nil
		}
		var perm permanentError
		if errors.As(err, &perm) || errors.Is(err, nats.ErrConnectionClosed) || (nc != nil && nc.IsClosed()) {
			return err
		}
		if timedOut {
			timeout = min(2*timeout, a.maxTimeout)
		}
		backoff = nextBackoff(backoff)
		if rctx.Err() != nil {
			return errors.Join(err, rctx.Err())
		}
		failed(err, backoff)
		select {
		case <-rctx.Done():
			return errors.Join(err, rctx.Err())
		case <-time.After(backoff):
		}
	}
}

// awaitConnected returns once nc is connected or closed, or ctx ends.
func awaitConnected(ctx context.Context, nc *nats.Conn) {
	if nc == nil || nc.IsConnected() || nc.IsClosed() {
		return
	}
	ch := nc.StatusChanged(nats.CONNECTED, nats.CLOSED)
	defer nc.RemoveStatusListener(ch)
	if nc.IsConnected() || nc.IsClosed() {
		return
	}
	select {
	case <-ch:
	case <-ctx.Done():
	}
}
