package broker

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// MinFree is the free space Heal wants on the store's file system before it
// restarts JetStream.
const MinFree = 4 << 20

// ErrNoSpace is wrapped by Heal's error while the store's file system has
// less than MinFree bytes free.
var ErrNoSpace = errors.New("not enough free space for the jetstream store")

// Heal restarts JetStream (its streams and consumers are reloaded from the
// store; clients keep their connections) once the store's file system has
// MinFree bytes free again. nats-server keeps refusing every write to a
// stream whose file store failed one (a full disk: "no space left on
// device", then "lmb missing") until the stream is reloaded; the server
// calls Heal while its writes fail, so that they work again once space
// returns, without a restart of the process.
func (b *Broker) Heal() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	dir := b.base.StoreDir
	free, err := freeBytes(dir)
	if err != nil {
		return fmt.Errorf("free space of %s: %w", dir, err)
	}
	if free < MinFree {
		return fmt.Errorf("%w: %d bytes free in %s (at least %d needed): free some space", ErrNoSpace, free, dir, MinFree)
	}
	if b.srv.JetStreamEnabled() {
		if err := b.srv.ShutdownJetStream(); err != nil {
			return fmt.Errorf("stop jetstream: %w", err)
		}
	}
	// Cleared before the restart: a write error while it loads the
	// streams counts.
	b.writeErr.Store(nil)
	o := b.base
	cfg := &server.JetStreamConfig{
		StoreDir:     o.StoreDir,
		SyncInterval: o.SyncInterval,
		SyncAlways:   o.SyncAlways,
		Strict:       !o.NoJetStreamStrict,
		MaxMemory:    o.JetStreamMaxMemory,
		MaxStore:     o.JetStreamMaxStore,
		Domain:       o.JetStreamDomain,
		CompressOK:   true,
		UniqueTag:    o.JetStreamUniqueTag,
	}
	if err := b.srv.EnableJetStream(cfg); err != nil {
		return fmt.Errorf("restart jetstream: %w", err)
	}
	return nil
}

// WriteError is a failed write of JetStream's store, as the server logged
// it ("Critical write error: ... no space left on device").
type WriteError struct {
	Message string
	At      time.Time
}

func (e *WriteError) Error() string { return "jetstream store: " + e.Message }

// Failing returns the last write error of JetStream's store since the
// server started or Heal restarted JetStream, nil when there was none: the
// stream it names refuses every write until it is reloaded.
func (b *Broker) Failing() error {
	if e := b.writeErr.Load(); e != nil {
		return e
	}
	return nil
}

// isWriteError tells a store write failure among the server's error logs.
func isWriteError(msg string) bool {
	return strings.Contains(msg, "Critical write error") || strings.Contains(msg, "critical write error") ||
		strings.Contains(msg, "failed to store a msg")
}
