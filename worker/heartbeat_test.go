package worker

import (
	"context"
	"encoding/json"
	"errors"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/postrotate/postrotate/executor"
	"github.com/postrotate/postrotate/messages"
	"github.com/postrotate/postrotate/worker/workertest"
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

// waitRegistered waits until the worker's registration is put in the
// workers bucket and returns it.
func (b *bundle) waitRegistered(t *testing.T, name string) messages.WorkerInfo {
	t.Helper()
	var info messages.WorkerInfo
	b.watchRegistration(t, name, func(e jetstream.KeyValueEntry) bool {
		info = decodeRegistration(t, e)
		return true
	})
	return info
}

// watchRegistration waits until cond holds for a put of the worker's
// registration (the current one, then each heartbeat).
func (b *bundle) watchRegistration(t *testing.T, name string, cond func(jetstream.KeyValueEntry) bool) {
	t.Helper()
	workertest.WatchKey(t, b.kv(t, b.subj.WorkersBucket()), messages.WorkerKey(host, name), within, func(e jetstream.KeyValueEntry) bool {
		return e.Operation() == jetstream.KeyValuePut && cond(e)
	})
}

func decodeRegistration(t *testing.T, e jetstream.KeyValueEntry) messages.WorkerInfo {
	t.Helper()
	var info messages.WorkerInfo
	if err := json.Unmarshal(e.Value(), &info); err != nil {
		t.Fatalf("registration %s: %v", e.Key(), err)
	}
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
	// last_seen advances.
	b.watchRegistration(t, "w1", func(e jetstream.KeyValueEntry) bool {
		info := decodeRegistration(t, e)
		return info.LastSeen.After(first.LastSeen) && info.StartedAt.Equal(first.StartedAt)
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
	first := b.waitRegistered(t, "w1")
	// Heartbeats keep the entry past its TTL: each put comes before the
	// previous one expired, for longer than the TTL.
	prev := time.Time{}
	b.watchRegistration(t, "w1", func(e jetstream.KeyValueEntry) bool {
		if !prev.IsZero() && e.Created().Sub(prev) >= b.cfg.workerTTL {
			t.Fatalf("registration expired while the worker heartbeats: no heartbeat for %s", e.Created().Sub(prev))
		}
		prev = e.Created()
		return decodeRegistration(t, e).LastSeen.Sub(first.LastSeen) > 1500*time.Millisecond
	})
	if _, ok := b.registration(t, "w1"); !ok {
		t.Fatal("registration expired while the worker heartbeats")
	}
	nc.Close() // the worker's process dies: no heartbeat, no deregistration
	// An expiry leaves no entry to watch: polled.
	workertest.Eventually(t, within, "registration of a dead worker expires", func() bool {
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
	naks := b.naks(t)
	start(t, w)
	b.publish(t, task(1))
	// Delivered again well before AckWait (30s): it was nak'd, not left.
	b.waitNaks(t, naks, 3)
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

// naks subscribes to the nak advisories of host's consumer: JetStream
// publishes one each time a worker naks a task.
func (b *bundle) naks(t *testing.T) <-chan *nats.Msg {
	t.Helper()
	ch := make(chan *nats.Msg, 64)
	subject := "$JS.EVENT.ADVISORY.CONSUMER.MSG_NAKED." + b.subj.TasksStream() + "." + b.subj.Consumer(host)
	sub, err := b.js.Conn().ChanSubscribe(subject, ch)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return ch
}

// waitNaks waits for n nak advisories on naks: the task was delivered n
// times, and nak'd each time.
func (b *bundle) waitNaks(t *testing.T, naks <-chan *nats.Msg, n int) {
	t.Helper()
	timeout := time.After(within)
	for i := range n {
		select {
		case <-naks:
		case <-timeout:
			t.Fatalf("%d of %d naks within %s", i, n, within)
		}
	}
}

func TestNewRejectsNegativeDurations(t *testing.T) {
	t.Parallel()
	_, err := New(nil, Options{Host: host, HeartbeatEvery: -time.Second, Executors: map[string]executor.Executor{}})
	if !errors.Is(err, ErrInvalidOptions) {
		t.Fatalf("New with a negative HeartbeatEvery: %v, want ErrInvalidOptions", err)
	}
}
