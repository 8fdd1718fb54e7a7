package dispatch

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/postrotate/postrotate/messages"
	"github.com/postrotate/postrotate/messages/envelope"
)

// maxDeliveriesAdvisory is the part of JetStream's MAX_DELIVERIES advisory
// we use.
type maxDeliveriesAdvisory struct {
	Stream     string `json:"stream"`
	Consumer   string `json:"consumer"`
	StreamSeq  uint64 `json:"stream_seq"`
	Deliveries int    `json:"deliveries"`
}

// WatchMaxDeliveries turns the MAX_DELIVERIES advisories of the task
// consumers into failed steps: JetStream stops delivering such a task but
// leaves it in the work queue, so the dispatcher publishes the step's
// failed result (the waiting rotation goes on at once) and deletes the
// task. With a Signer, a task message the coordinator did not sign is only
// deleted: it does not speak for the step it claims. Call the returned
// function to stop watching.
func (d *Dispatcher) WatchMaxDeliveries() (stop func(), err error) {
	subj := d.opts.Subjects
	sub, err := d.js.Conn().Subscribe("$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES."+subj.TasksStream()+".*", func(m *nats.Msg) {
		var adv maxDeliveriesAdvisory
		if err := json.Unmarshal(m.Data, &adv); err != nil {
			d.log.Warn().Err(err).Msg("decode max deliveries advisory")
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := d.maxDelivered(ctx, adv); err != nil {
			d.log.Error().Err(err).Uint64("stream_seq", adv.StreamSeq).Str("consumer", adv.Consumer).Msg("handle max deliveries")
		}
	})
	if err != nil {
		return nil, fmt.Errorf("watch max deliveries advisories: %w", err)
	}
	return func() { _ = sub.Unsubscribe() }, nil
}

func (d *Dispatcher) maxDelivered(ctx context.Context, adv maxDeliveriesAdvisory) error {
	subj := d.opts.Subjects
	stream, err := d.js.Stream(ctx, subj.TasksStream())
	if err != nil {
		return err
	}
	msg, err := stream.GetMsg(ctx, adv.StreamSeq)
	if err != nil {
		return fmt.Errorf("read task %d: %w", adv.StreamSeq, err)
	}
	// Read what identifies the step even from a task that does not validate.
	var head messages.Task
	decodeErr := json.Unmarshal(msg.Data, &head)
	// With a signer, only a task of ours speaks for its step: a forged one
	// must not pre-empt the step's result.
	ours := d.opts.Signer == nil || d.opts.Signer.Verify(msg.Data, msg.Header.Get(envelope.HeaderSignature), msg.Header.Get(envelope.HeaderSigner)) == nil
	if ours && decodeErr == nil && messages.ValidToken(head.RotationID) && head.Step > 0 {
		rr := messages.NotRun(head, fmt.Sprintf("task delivered %d times to host %q without being acknowledged (max deliveries): removed from the queue", adv.Deliveries, head.Host), d.opts.Now())
		if _, err := d.publishResult(ctx, rr); err != nil {
			return fmt.Errorf("publish result of task %d: %w", adv.StreamSeq, err)
		}
	}
	if err := stream.DeleteMsg(ctx, adv.StreamSeq); err != nil {
		return fmt.Errorf("delete task %d: %w", adv.StreamSeq, err)
	}
	if !ours {
		d.log.Warn().Uint64("stream_seq", adv.StreamSeq).Int("deliveries", adv.Deliveries).Str("rotation_id", head.RotationID).
			Int("step", head.Step).Msg("task message not signed by this coordinator reached max deliveries: removed")
		return nil
	}
	d.log.Warn().Uint64("stream_seq", adv.StreamSeq).Int("deliveries", adv.Deliveries).Str("rotation_id", head.RotationID).
		Int("step", head.Step).Msg("task reached max deliveries: step failed, task removed")
	return nil
}
