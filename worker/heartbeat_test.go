package worker

import (
	"context"
	"encoding/json"
	"errors"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/postrotate/postrotate/executor"
	"github.com/postrotate/postrotate/messages"
)

// registration reads a worker's registration; ok is false when it has none.
func (b *bundle) registration(t *testing.T, name string) (info messages.WorkerInfo, ok bool) {
	t.Helper()
	e, err := b.kv(t, b.subj.WorkersBucket()).Get(t.Context(), messages.WorkerKey(host, name))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return info, false
	}
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(e.Value(), &info); err != nil {
		t.Fatalf("registration of %s: %v", name, err)
	}
	return info, true
}

// waitRegistered waits until the worker is registered and returns its entry.
func (b *bundle) waitRegistered(t *testing.T, name string) messages.WorkerInfo {
	t.Helper()
	var info messages.WorkerInfo
	eventually(t, "registration of "+name, func() bool {
		var ok bool
		info, ok = b.registration(t, name)
		return ok
	})
	return info
}

func TestRegistrationIsRefreshedAndRemovedOnStop(t *testing.T) {
	t.Parallel()
	w, b := setup(t, config{}, func(o *Options) {
		o.Version = "1.2.3"
		o.HeartbeatEvery = 50 * time.Millisecond
		o.Executors[messages.RunnerSSH] = &fakeExecutor{}
	})
	before := time.Now()
	if err := w.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	first := b.waitRegistered(t, "w1")
	if first.SchemaVersion != messages.SchemaVersion || first.Host != host || first.Name != "w1" || first.Version != "1.2.3" ||
		first.OS != runtime.GOOS || first.Arch != runtime.GOARCH || !slices.Equal(first.Runners, []string{"local", "ssh"}) ||
		first.StartedAt.Before(before) || first.LastSeen.Before(first.StartedAt) {
		t.Fatalf("registration = %+v", first)
	}
	eventually(t, "last_seen advances", func() bool {
		info, ok := b.registration(t, "w1")
		return ok && info.LastSeen.After(first.LastSeen) && info.StartedAt.Equal(first.StartedAt)
	})

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := w.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if info, ok := b.registration(t, "w1"); ok {
		t.Fatalf("registration after Stop: %+v", info)
	}
}

// A killed worker stops heartbeating: its registration expires with the
// bucket's TTL, and not before while it heartbeats.
func TestKilledWorkerRegistrationExpires(t *testing.T) {
	t.Parallel()
	_, b := setup(t, config{workerTTL: time.Second}, nil)
	nc, js := b.connect(t)
	w := b.worker(t, js, &fakeExecutor{}, func(o *Options) { o.HeartbeatEvery = 100 * time.Millisecond })
	start(t, w)
	b.waitRegistered(t, "w1")
	// Heartbeats keep the entry past its TTL.
	for end := time.Now().Add(1500 * time.Millisecond); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if _, ok := b.registration(t, "w1"); !ok {
			t.Fatal("registration expired while the worker heartbeats")
		}
	}
	nc.Close() // the worker's process dies: no heartbeat, no deregistration
	eventually(t, "registration of a dead worker expires", func() bool {
		_, ok := b.registration(t, "w1")
		return !ok
	})
}

// The coordinator creates the buckets; a worker started before it keeps
// trying: nothing runs without a started marker, the task is nak'd and runs
// once the buckets exist, and the worker registers then.
func TestBucketsMissing(t *testing.T) {
	t.Parallel()
	w, b := setup(t, config{noBuckets: true, maxDeliver: -1}, func(o *Options) {
		o.NakDelay = 100 * time.Millisecond
		o.HeartbeatEvery = 100 * time.Millisecond
	})
	start(t, w)
	b.publish(t, task(1))
	// Delivered again well before AckWait (30s): it was nak'd, not left.
	eventually(t, "task nak'd and delivered again", func() bool {
		info, err := b.consumer.Info(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		return info.Delivered.Consumer >= 3
	})
	if n := len(b.exec.Jobs()); n != 0 {
		t.Fatalf("ran %d scripts without a started marker", n)
	}
	select {
	case rr := <-b.results:
		t.Fatalf("result published without a started marker: %+v", rr)
	default:
	}

	b.createBuckets(t)
	if rr := b.result(t); !rr.Success || rr.Attempt < 3 {
		t.Fatalf("result = %+v", rr)
	}
	b.waitDrained(t)
	if n := len(b.exec.Jobs()); n != 1 {
		t.Fatalf("script ran %d times", n)
	}
	b.waitRegistered(t, "w1")
}

func TestNewRejectsNegativeDurations(t *testing.T) {
	t.Parallel()
	_, err := New(nil, Options{Host: host, HeartbeatEvery: -time.Second, Executors: map[string]executor.Executor{}})
	if !errors.Is(err, ErrInvalidOptions) {
		t.Fatalf("New with a negative HeartbeatEvery: %v, want ErrInvalidOptions", err)
	}
}
