package worker

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/postrotate/postrotate/messages"
)

// deregisterTimeout bounds the deletion of the registration on Stop.
const deregisterTimeout = 5 * time.Second

// heartbeat is the goroutine that keeps the worker registered in the
// workers bucket. Its owner is the Worker: Start starts it, Stop ends it.
type heartbeat struct {
	quit   chan struct{}      // closed by stop
	cancel context.CancelFunc // cuts a beat in flight short
	done   chan struct{}      // closed when the goroutine has ended
	once   sync.Once
}

// stop ends the heartbeat and waits until the registration is deleted.
// Safe to call twice, and concurrently.
func (h *heartbeat) stop() {
	h.once.Do(func() {
		h.cancel()
		close(h.quit)
	})
	<-h.done
}

// startHeartbeat registers the worker at once and then refreshes its
// registration every HeartbeatEvery, until stop. A failed beat (no bucket
// yet, broker unreachable) is logged and tried again at the next tick: the
// registration is how operators see workers, never a condition for running
// tasks. On stop, the registration is deleted.
func (w *Worker) startHeartbeat(ctx context.Context) *heartbeat {
	beatCtx, cancel := context.WithCancel(ctx)
	h := &heartbeat{quit: make(chan struct{}), cancel: cancel, done: make(chan struct{})}
	now := w.opts.Now()
	info := messages.WorkerInfo{
		SchemaVersion: messages.SchemaVersion,
		Host:          w.opts.Host,
		Name:          w.opts.Name,
		Version:       w.opts.Version,
		OS:            runtime.GOOS,
		Arch:          runtime.GOARCH,
		StartedAt:     now,
		Runners:       slices.Sorted(maps.Keys(w.opts.Executors)),
	}
	go func() {
		defer close(h.done)
		var kv jetstream.KeyValue
		tick := time.NewTicker(w.opts.HeartbeatEvery)
		defer tick.Stop()
		for {
			var err error
			if kv, err = w.beat(beatCtx, kv, &info); err != nil && beatCtx.Err() == nil {
				w.log.Warn().Err(err).Dur("retry_in", w.opts.HeartbeatEvery).Msg("heartbeat")
			}
			select {
			case <-h.quit:
				w.deregister(ctx, kv)
				return
			case <-tick.C:
			}
		}
	}()
	return h
}

// beat writes the registration with a fresh last_seen. It opens the bucket
// on first use and returns the handle to reuse.
func (w *Worker) beat(ctx context.Context, kv jetstream.KeyValue, info *messages.WorkerInfo) (jetstream.KeyValue, error) {
	ctx, cancel := context.WithTimeout(ctx, w.opts.HeartbeatEvery)
	defer cancel()
	if kv == nil {
		bucket := w.opts.Subjects.WorkersBucket()
		opened, err := w.js.KeyValue(ctx, bucket)
		if err != nil {
			return nil, fmt.Errorf("open workers bucket %s: %w", bucket, err)
		}
		if st, err := opened.Status(ctx); err == nil && st.TTL() > 0 && st.TTL() <= w.opts.HeartbeatEvery {
			w.log.Warn().Dur("ttl", st.TTL()).Dur("heartbeat_every", w.opts.HeartbeatEvery).
				Msg("workers bucket entries expire before the next heartbeat; lower the heartbeat interval")
		}
		kv = opened
	}
	info.LastSeen = w.opts.Now()
	data, err := json.Marshal(info)
	if err != nil {
		return kv, fmt.Errorf("encode registration: %w", err)
	}
	if _, err := kv.Put(ctx, messages.WorkerKey(w.opts.Host, w.opts.Name), data); err != nil {
		return kv, fmt.Errorf("refresh registration: %w", err)
	}
	return kv, nil
}

// deregister deletes the registration, if the bucket was ever reached.
func (w *Worker) deregister(ctx context.Context, kv jetstream.KeyValue) {
	if kv == nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, deregisterTimeout)
	defer cancel()
	if err := kv.Delete(ctx, messages.WorkerKey(w.opts.Host, w.opts.Name)); err != nil {
		w.log.Warn().Err(err).Msg("delete registration; it expires with the bucket's TTL")
		return
	}
	w.log.Debug().Msg("registration deleted")
}
