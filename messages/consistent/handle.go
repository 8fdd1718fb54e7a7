package consistent

import (
	"context"
	"errors"
	"sync/atomic"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// handle is a bucket handle that keeps reading when the bucket's stream
// stops serving direct gets after it was bound. A jetstream handle fixes
// how it reads when it binds: one bound while direct gets were on (two
// coordinators opening a bucket at once, one of them still between
// creating it and turning them off) sends its gets to a subject nobody
// answers afterwards — Get fails with "no responders", and Create of a
// deleted key (which reads the delete marker) wrongly says the key exists.
// handle binds again and retries once in both cases. Writes, watches and
// listings never use direct gets: they go through the embedded handle.
type handle struct {
	jetstream.KeyValue
	js     jetstream.JetStream
	reader atomic.Pointer[jetstream.KeyValue] // used for Get, GetRevision and Create
}

func newHandle(js jetstream.JetStream, kv jetstream.KeyValue) *handle {
	h := &handle{KeyValue: kv, js: js}
	h.reader.Store(&kv)
	return h
}

func (h *handle) read() jetstream.KeyValue { return *h.reader.Load() }

// rebind binds the bucket again for reads, after a get found no responders.
func (h *handle) rebind(ctx context.Context) (jetstream.KeyValue, error) {
	kv, err := h.js.KeyValue(ctx, h.Bucket())
	if err != nil {
		return nil, err
	}
	h.reader.Store(&kv)
	return kv, nil
}

// retry runs get on the reader, and once more on a reader bound again when
// the first found no responders.
func retry[T any](ctx context.Context, h *handle, get func(jetstream.KeyValue) (T, error)) (T, error) {
	v, err := get(h.read())
	if errors.Is(err, nats.ErrNoResponders) {
		if kv, rerr := h.rebind(ctx); rerr == nil {
			return get(kv)
		}
	}
	return v, err
}

func (h *handle) Get(ctx context.Context, key string) (jetstream.KeyValueEntry, error) {
	return retry(ctx, h, func(kv jetstream.KeyValue) (jetstream.KeyValueEntry, error) { return kv.Get(ctx, key) })
}

func (h *handle) GetRevision(ctx context.Context, key string, revision uint64) (jetstream.KeyValueEntry, error) {
	return retry(ctx, h, func(kv jetstream.KeyValue) (jetstream.KeyValueEntry, error) {
		return kv.GetRevision(ctx, key, revision)
	})
}

// Create reports an existing key only when a get finds it: a key that was
// deleted is created again even when the first reader could not see its
// delete marker.
func (h *handle) Create(ctx context.Context, key string, value []byte, opts ...jetstream.KVCreateOpt) (uint64, error) {
	rev, err := h.read().Create(ctx, key, value, opts...)
	if !errors.Is(err, jetstream.ErrKeyExists) {
		return rev, err
	}
	if _, gerr := h.Get(ctx, key); errors.Is(gerr, jetstream.ErrKeyNotFound) {
		return h.read().Create(ctx, key, value, opts...)
	}
	return rev, err
}
