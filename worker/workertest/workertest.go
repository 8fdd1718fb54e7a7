// Package workertest holds what the tests of a worker, and of the
// components that run one, share: an in-process nats-server with
// JetStream, a worker started for the length of a test, and waits on what
// a worker writes to JetStream (its registration, its results) instead of
// poll loops.
//
// It does not import the worker package, so that the worker's own tests
// can use it too: [Start] takes anything with the worker's Start and Stop.
//
// # Waiting
//
// A test waits on an event where the system publishes one: [WatchKey] for
// a KV entry (a worker's registration in the workers bucket, a started
// marker), [Next] for a message on a stream (a result on
// postrotate.results.>, an event on postrotate.events.>). [Eventually]
// polls what has no event: a key that expired with its bucket's TTL, a
// work queue drained by acks, a process gone.
package workertest

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
)

// Server starts an in-process nats-server with JetStream, with opts, and
// shuts it down when the test ends. It sets in opts, which the server
// keeps, JetStream, no signal handlers, no log and, unless set, a store in
// a fresh test directory.
func Server(tb testing.TB, opts *server.Options) *server.Server {
	tb.Helper()
	opts.JetStream = true
	opts.NoSigs, opts.NoLog = true, true
	if opts.StoreDir == "" {
		opts.StoreDir = tb.TempDir()
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		tb.Fatal(err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		tb.Fatal("nats-server not ready within 10s")
	}
	tb.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	return srv
}

// Lifecycle is the part of a worker Start uses; *worker.Worker has it.
type Lifecycle interface {
	Start(ctx context.Context) error
	Stop(ctx context.Context) error
}

// Start starts w and stops it when the test ends, giving its running
// script grace to finish. With grace > 0, an error of that Stop fails the
// test. With grace 0, Stop cancels a running script at once and its error
// (the script it cancelled) is expected: for tests of other components,
// whose workers may still hold a task when the test ends.
func Start(tb testing.TB, w Lifecycle, grace time.Duration) {
	tb.Helper()
	if err := w.Start(tb.Context()); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), grace)
		defer cancel()
		if err := w.Stop(ctx); err != nil && grace > 0 {
			tb.Errorf("stop the worker: %v", err)
		}
	})
}

// WatchKey watches key in kv, from its current value on, until an entry
// satisfies cond, and returns it; it fails the test after within. cond
// sees every put and delete of the key (a delete as an entry whose
// Operation is not KeyValuePut), never an expiry: a key that expires with
// the bucket's TTL leaves no entry behind (wait for it with Eventually).
func WatchKey(tb testing.TB, kv jetstream.KeyValue, key string, within time.Duration, cond func(jetstream.KeyValueEntry) bool) jetstream.KeyValueEntry {
	tb.Helper()
	ctx, cancel := context.WithTimeout(tb.Context(), within)
	defer cancel()
	w, err := kv.Watch(ctx, key)
	if err != nil {
		tb.Fatalf("watch %s: %v", key, err)
	}
	defer func() { _ = w.Stop() }()
	for {
		select {
		case e := <-w.Updates():
			if e != nil && cond(e) { // nil: the current values are all delivered
				return e
			}
		case <-ctx.Done():
			tb.Fatalf("key %s: no entry as awaited within %s", key, within)
			return nil
		}
	}
}

// Next returns the next message of cons, failing the test after within.
func Next(tb testing.TB, cons jetstream.Consumer, within time.Duration) jetstream.Msg {
	tb.Helper()
	msg, err := cons.Next(jetstream.FetchMaxWait(within))
	if err != nil {
		tb.Fatalf("no message within %s: %v", within, err)
	}
	return msg
}

// Eventually polls cond every 20ms until it holds, failing the test with
// what after within. It is for states no event announces; cond runs on the
// test's goroutine, so it may fail the test itself.
func Eventually(tb testing.TB, within time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(within)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("%s: not within %s", what, within)
		}
		<-tick.C
	}
}
