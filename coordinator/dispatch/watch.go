package dispatch

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/postrotate/postrotate/messages"
)

var errDeadline = errors.New("step deadline passed")

// RefusedError is the outcome of a step whose worker refused the very
// task message the dispatcher published (a secret sealed for a key the
// worker no longer has, say): the worker reported it on its refused
// subject (messages.Subjects.Refused).
type RefusedError struct {
	Host   string
	Worker string
	Reason string // without the "refused: " prefix
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("refused by worker %q of host %q: %s", e.Worker, e.Host, e.Reason)
}

// resultWatch reads one rotation's results from the results stream with an
// ordered consumer, which survives reconnects and replays from the stream;
// with a signer, also the refusals published from then on, with another.
type resultWatch struct {
	subj    messages.Subjects
	its     []jetstream.MessagesContext
	pending map[int]messages.RotationResult
	msgs    chan jetstream.Msg
	done    chan struct{}
	closed  chan struct{} // closed when the results reader has ended
	once    sync.Once
	wg      sync.WaitGroup
}

// expect is what a step waits for: the result of step, or the refusal of
// its task message, at seq in the tasks stream, by the worker of host.
type expect struct {
	step int
	host string
	seq  uint64
}

func (d *Dispatcher) watchResults(ctx context.Context, rotationID string) (*resultWatch, error) {
	subj := d.opts.Subjects
	w := &resultWatch{subj: subj, pending: map[int]messages.RotationResult{}, msgs: make(chan jetstream.Msg), done: make(chan struct{}), closed: make(chan struct{})}
	cons, err := d.js.OrderedConsumer(ctx, subj.ResultsStream(), jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{subj.Results(rotationID)},
	})
	if err == nil {
		err = w.read(cons, true)
	}
	if err != nil {
		return nil, fmt.Errorf("watch results of rotation %s: %w", rotationID, err)
	}
	if d.opts.Signer != nil {
		// Only workers with credentials refuse, and only tasks published
		// from now on concern this rotation.
		cons, err := d.js.OrderedConsumer(ctx, subj.ResultsStream(), jetstream.OrderedConsumerConfig{
			FilterSubjects: []string{subj.AllRefused()},
			DeliverPolicy:  jetstream.DeliverNewPolicy,
		})
		if err == nil {
			err = w.read(cons, false)
		}
		if err != nil {
			// A step whose task is refused then fails at its deadline.
			d.log.Warn().Err(err).Str("rotation_id", rotationID).Msg("watch task refusals (run layout.Layout.Setup)")
		}
	}
	return w, nil
}

// read forwards the messages of cons to w.msgs until the watch stops. When
// the reader of an essential consumer ends, wait fails.
func (w *resultWatch) read(cons jetstream.Consumer, essential bool) error {
	it, err := cons.Messages()
	if err != nil {
		return err
	}
	w.its = append(w.its, it)
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		if essential {
			defer w.once.Do(func() { close(w.closed) })
		}
		for {
			msg, err := it.Next()
			if err != nil {
				return // iterator stopped
			}
			select {
			case w.msgs <- msg:
			case <-w.done:
				return
			}
		}
	}()
	return nil
}

// Stop ends the watch and its goroutines.
func (w *resultWatch) Stop() {
	close(w.done)
	for _, it := range w.its {
		it.Stop()
	}
	w.wg.Wait()
}

// wait returns the result of the expected step, a *RefusedError when its
// worker refused its task message, or errDeadline.
func (w *resultWatch) wait(ctx context.Context, want expect, deadline time.Time) (messages.RotationResult, error) {
	if rr, ok := w.pending[want.step]; ok {
		return rr, nil
	}
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	refused := w.subj.Refused(want.host)
	for {
		select {
		case <-ctx.Done():
			return messages.RotationResult{}, ctx.Err()
		case <-timer.C:
			return messages.RotationResult{}, errDeadline
		case <-w.closed:
			return messages.RotationResult{}, errors.New("result watch closed")
		case msg := <-w.msgs:
			rr, err := messages.DecodeResult(msg.Data())
			if err != nil {
				continue // not ours to judge: a malformed result is ignored, the deadline still holds
			}
			if strings.HasPrefix(msg.Subject(), strings.TrimSuffix(w.subj.AllRefused(), ">")) {
				// Only the refusal of the message we published counts: a
				// forged task claiming this step is not this step.
				if msg.Subject() == refused && msg.Headers().Get(jetstream.MsgIDHeader) == messages.RefusedMsgID(want.seq) {
					return messages.RotationResult{}, &RefusedError{Host: want.host, Worker: rr.Worker, Reason: strings.TrimPrefix(rr.Error, "refused: ")}
				}
				continue
			}
			if rr.Step == want.step {
				return rr, nil
			}
			if _, seen := w.pending[rr.Step]; !seen {
				w.pending[rr.Step] = rr
			}
		}
	}
}
