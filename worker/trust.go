package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/postrotate/postrotate/messages"
	"github.com/postrotate/postrotate/messages/envelope"
)

// admission is what a worker with Trust makes of a task message before
// anything else.
type admission struct {
	do     admit
	reason string // reject: why, for the refusal and the term
	cause  error  // invalid, retry
}

type admit int

const (
	admitted   admit = iota // the coordinator's task for this host, opened
	rejected                // not the coordinator's task for this worker: refuse on the refused subject
	invalid                 // the coordinator's, but not a valid task: as an undecodable task
	retryLater              // the replay check could not be made: deliver again later
)

// admit checks that msg is a task the coordinator made for this worker, in
// this order: a valid signature by the coordinator over the data, a task
// that decodes, for this host, whose secret is sealed for this worker by
// the coordinator, and whose id was not first seen in another message (a
// replay). It returns the task with its secret opened.
//
// Expiry and the started markers are decided afterwards, as without Trust
// (see decide): an expired task is the coordinator's, and its refusal is
// the step's result.
func (w *Worker) admit(ctx context.Context, msg message, seq uint64) (messages.Task, admission) {
	trust := w.opts.Trust
	data := msg.Data()
	h := msg.Headers()
	if err := trust.Verify(data, h.Get(envelope.HeaderSignature), h.Get(envelope.HeaderSigner)); err != nil {
		return messages.Task{}, admission{do: rejected, reason: err.Error()}
	}
	task, err := messages.DecodeTask(data)
	if err != nil {
		return messages.Task{}, admission{do: invalid, cause: err}
	}
	if task.Host != w.opts.Host {
		// A copy of another host's task: its refusal must not be taken
		// for that host's result.
		return messages.Task{}, admission{do: rejected, reason: fmt.Sprintf("task is for host %q, this worker serves %q", task.Host, w.opts.Host)}
	}
	if task.Secret != nil {
		return messages.Task{}, admission{do: rejected, reason: envelope.ErrNotSealed.Error()}
	}
	secret, err := trust.OpenSecret(task.SealedSecret)
	switch {
	case errors.Is(err, messages.ErrInvalidTask):
		return messages.Task{}, admission{do: invalid, cause: err}
	case err != nil:
		return messages.Task{}, admission{do: rejected, reason: err.Error()}
	}
	if seq == 0 {
		return messages.Task{}, admission{do: rejected, reason: "the message has no stream sequence: cannot check it is not a replay"}
	}
	first, err := w.firstSeen(ctx, task.ID, seq)
	switch {
	case err != nil:
		return messages.Task{}, admission{do: retryLater, cause: err}
	case first != seq:
		return messages.Task{}, admission{do: rejected, reason: fmt.Sprintf("replay: task %s was first delivered as message %d of the tasks stream, this is message %d", task.ID, first, seq)}
	}
	task.Secret, task.SealedSecret = &secret, nil
	if err := task.ValidateSecret(); err != nil {
		return messages.Task{}, admission{do: invalid, cause: err}
	}
	return task, admission{do: admitted}
}

// seenKey is the key, in the started bucket, of the stream sequence of the
// message a task was first seen in. It cannot collide with a started
// marker's key, which has no '.'.
func seenKey(taskID string) string { return "seen." + startedKey(taskID) }

// firstSeen returns the stream sequence of the first message task id
// arrived in, recording seq when it is the first. A redelivery of that
// message has the same sequence; a copy of it published again has another.
func (w *Worker) firstSeen(ctx context.Context, taskID string, seq uint64) (uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, markerTimeout)
	defer cancel()
	kv, err := w.startedBucket(ctx)
	if err != nil {
		return 0, err
	}
	key := seenKey(taskID)
	_, err = kv.Create(ctx, key, []byte(strconv.FormatUint(seq, 10)))
	if err == nil {
		return seq, nil
	}
	if !errors.Is(err, jetstream.ErrKeyExists) {
		return 0, fmt.Errorf("write %s: %w", key, err)
	}
	entry, err := w.startedGet(ctx, kv, key)
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", key, err)
	}
	first, err := strconv.ParseUint(string(entry.Value()), 10, 64)
	if err != nil {
		// Not a sequence this worker wrote: whatever it says, this
		// message is not the one first seen.
		return 0, nil
	}
	return first, nil
}

// reject refuses a task message that is not the coordinator's task for
// this worker: nothing runs, a refusal is published on the host's refused
// subject (never on the step's, which a forged task must not pre-empt) and
// the message is terminated, even when the refusal could not be published:
// left in the queue, it would come back until max deliveries. It logs what
// the message claims to be, never its content.
func (w *Worker) reject(ctx context.Context, msg message, seq uint64, attempt int, reason string) {
	claim := claimed(msg.Data())
	log := w.log.With().Str("rotation_id", claim.RotationID).Int("step", claim.Step).Uint64("stream_seq", seq).Logger()
	log.Warn().Str("reason", reason).Msg("task refused: not the coordinator's task for this worker")
	rr := messages.NotRun(messages.Task{RotationID: claim.RotationID, Step: claim.Step, Host: w.opts.Host}, "refused: "+reason, w.opts.Now())
	rr.Worker, rr.Attempt = w.opts.Name, attempt
	// publishTo logs when it gives up.
	w.publishTo(ctx, log, w.opts.Subjects.Refused(w.opts.Host), messages.RefusedMsgID(seq), rr)
	w.finish(ctx, msg, term, "refused: "+reason)
}

// claim is what an unverified task message says it is.
type claim struct {
	RotationID string `json:"rotation_id"`
	Step       int    `json:"step"`
}

// claimed reads the rotation and step a message claims, when it can: an
// unreadable or malformed claim is left empty.
func claimed(data []byte) claim {
	var c claim
	if json.Unmarshal(data, &c) != nil || !messages.ValidToken(c.RotationID) || c.Step < 1 {
		return claim{}
	}
	return c
}
