package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/postrotate/postrotate/messages"
)

// markerTimeout bounds one read or write of a started marker.
const markerTimeout = 5 * time.Second

// startedKey is the key of a task's marker. Task ids ("<rotation>-<step>")
// are already valid KV keys; the host-token encoding keeps any other id
// valid and distinct (letters, digits and '-' are kept as they are).
func startedKey(taskID string) string { return messages.HostToken(taskID) }

// verdict is what the worker does with a decoded task.
type verdict struct {
	do     action
	reason string // refuse: the result's error
	cause  error  // retry: why the marker could not be read or written
	// run: the marker this worker wrote and its revision, and the earlier
	// marker when the script is run again after an interruption.
	marker messages.StartedMarker
	rev    uint64
	prev   *messages.StartedMarker
}

type action int

const (
	runIt    action = iota // run the script
	refuseIt               // publish a failed result without running, then ack
	retryIt                // run nothing, publish nothing: deliver again later
	ackIt                  // its result is already published: just ack
)

// decide says whether the task's script may run now and, when it may,
// records that it starts. It is the one place that reads and writes started
// markers before a run: a script never starts without its marker.
//
//   - no marker: write one (Create), run.
//   - a marker of a reported run: the result is out, ack only.
//   - a marker without a report (an earlier delivery started the script and
//     its outcome is unknown): run again, updating the marker, only if the
//     script allows it (retry_on_interrupt) and the task has not expired;
//     otherwise refuse it "in doubt".
//   - the marker cannot be read or written: retry later.
func (w *Worker) decide(ctx context.Context, task messages.Task, attempt int) verdict {
	if reason := w.refusal(task); reason != "" {
		return verdict{do: refuseIt, reason: "refused: " + reason}
	}
	ctx, cancel := context.WithTimeout(ctx, markerTimeout)
	defer cancel()
	kv, err := w.startedBucket(ctx)
	if err != nil {
		return verdict{do: retryIt, cause: err}
	}
	key := startedKey(task.ID)
	now := w.opts.Now()
	marker := messages.StartedMarker{Worker: w.opts.Name, Host: w.opts.Host, Attempt: attempt, StartedAt: now}
	mine, err := json.Marshal(marker)
	if err != nil {
		return verdict{do: retryIt, cause: fmt.Errorf("encode started marker: %w", err)}
	}
	expired := task.Expired(now)
	if !expired {
		rev, err := kv.Create(ctx, key, mine)
		if err == nil {
			return verdict{do: runIt, marker: marker, rev: rev}
		}
		if !errors.Is(err, jetstream.ErrKeyExists) {
			return verdict{do: retryIt, cause: fmt.Errorf("write started marker %s: %w", key, err)}
		}
	}
	entry, err := w.startedGet(ctx, kv, key)
	switch {
	case expired && errors.Is(err, jetstream.ErrKeyNotFound):
		return verdict{do: refuseIt, reason: fmt.Sprintf("refused: task expired at %s before a worker could start it",
			task.ExpiresAt.UTC().Format(time.RFC3339))}
	case err != nil:
		return verdict{do: retryIt, cause: fmt.Errorf("read started marker %s: %w", key, err)}
	}
	var prev messages.StartedMarker
	if err := json.Unmarshal(entry.Value(), &prev); err != nil {
		prev = messages.StartedMarker{Worker: "(unreadable marker)"}
	}
	switch {
	case !prev.ReportedAt.IsZero():
		return verdict{do: ackIt}
	case !task.Script.RetryOnInterrupt:
		return verdict{do: refuseIt, reason: inDoubt(prev, "not run again (set retry_on_interrupt: true on the attachment to allow it)")}
	case expired:
		return verdict{do: refuseIt, reason: inDoubt(prev, "not run again: the task expired at "+task.ExpiresAt.UTC().Format(time.RFC3339))}
	}
	// Compare-and-set: of two deliveries racing here, one runs the script.
	rev, err := kv.Update(ctx, key, mine, entry.Revision())
	if err != nil {
		return verdict{do: retryIt, cause: fmt.Errorf("update started marker %s: %w", key, err)}
	}
	return verdict{do: runIt, marker: marker, rev: rev, prev: &prev}
}

func inDoubt(m messages.StartedMarker, tail string) string {
	return fmt.Sprintf("in doubt: interrupted: the script was started by worker %q at %s (attempt %d) and its outcome is unknown; %s",
		m.Worker, m.StartedAt.UTC().Format(time.RFC3339), m.Attempt, tail)
}

// markReported records in the task's marker that its result is published,
// so that a delivery after a lost ack is acknowledged instead of reported
// in doubt or run again. A failure only loses that refinement.
func (w *Worker) markReported(ctx context.Context, task messages.Task, v verdict) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), markerTimeout)
	defer cancel()
	kv, err := w.startedBucket(ctx)
	if err != nil {
		return err
	}
	m := v.marker
	m.ReportedAt = w.opts.Now()
	data, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("encode started marker: %w", err)
	}
	if _, err := kv.Update(ctx, startedKey(task.ID), data, v.rev); err != nil {
		return fmt.Errorf("update started marker: %w", err)
	}
	return nil
}

// startedBucket returns the started bucket, opening it on first use.
func (w *Worker) startedBucket(ctx context.Context) (jetstream.KeyValue, error) {
	if w.startedKV != nil {
		return w.startedKV, nil
	}
	bucket := w.opts.Subjects.StartedBucket()
	kv, err := w.js.KeyValue(ctx, bucket)
	if err != nil {
		return nil, fmt.Errorf("open started bucket %s: %w", bucket, err)
	}
	w.startedKV = kv
	return kv, nil
}

// startedGet reads key from the started bucket. A handle bound while the
// bucket's stream allowed direct gets sends them to a subject nobody
// answers once serve turned them off (messages/consistent): on "no
// responders" the handle is dropped, so the next try binds again and reads
// from the stream's leader.
func (w *Worker) startedGet(ctx context.Context, kv jetstream.KeyValue, key string) (jetstream.KeyValueEntry, error) {
	entry, err := kv.Get(ctx, key)
	if errors.Is(err, nats.ErrNoResponders) {
		w.startedKV = nil
	}
	return entry, err
}
