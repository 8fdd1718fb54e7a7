package dispatch

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/postrotate/postrotate/messages"
)

var errDeadline = errors.New("step deadline passed")

// resultWatch reads one rotation's results from the results stream with an
// ordered consumer, which survives reconnects and replays from the stream.
type resultWatch struct {
	it      jetstream.MessagesContext
	pending map[int]messages.RotationResult
	msgs    chan jetstream.Msg
	done    chan struct{}
}

func (d *Dispatcher) watchResults(ctx context.Context, rotationID string) (*resultWatch, error) {
	subj := d.opts.Layout.Subjects
	cons, err := d.js.OrderedConsumer(ctx, subj.ResultsStream(), jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{subj.Results(rotationID)},
	})
	if err != nil {
		return nil, fmt.Errorf("watch results of rotation %s: %w", rotationID, err)
	}
	it, err := cons.Messages()
	if err != nil {
		return nil, fmt.Errorf("watch results of rotation %s: %w", rotationID, err)
	}
	w := &resultWatch{it: it, pending: map[int]messages.RotationResult{}, msgs: make(chan jetstream.Msg), done: make(chan struct{})}
	go func() {
		defer close(w.msgs)
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
	return w, nil
}

// Stop ends the watch and its goroutine.
func (w *resultWatch) Stop() {
	close(w.done)
	w.it.Stop()
	for range w.msgs { //nolint:revive // drain until the reader has returned
	}
}

// wait returns the result of step, or errDeadline.
func (w *resultWatch) wait(ctx context.Context, step int, deadline time.Time) (messages.RotationResult, error) {
	if rr, ok := w.pending[step]; ok {
		return rr, nil
	}
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return messages.RotationResult{}, ctx.Err()
		case <-timer.C:
			return messages.RotationResult{}, errDeadline
		case msg, ok := <-w.msgs:
			if !ok {
				return messages.RotationResult{}, errors.New("result watch closed")
			}
			rr, err := messages.DecodeResult(msg.Data())
			if err != nil {
				continue // not ours to judge: a malformed result is ignored, the deadline still holds
			}
			if rr.Step == step {
				return rr, nil
			}
			if _, seen := w.pending[rr.Step]; !seen {
				w.pending[rr.Step] = rr
			}
		}
	}
}
