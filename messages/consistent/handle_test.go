package consistent

import (
	"errors"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// A handle bound while the stream served direct gets keeps reading after
// they were turned off; the jetstream handle it wraps does not.
func TestHandleSurvivesDirectGetsTurnedOff(t *testing.T) {
	js := jetStream(t)
	ctx := t.Context()
	stale, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "B"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := LeaderReads(ctx, js, "B"); err != nil {
		t.Fatal(err)
	}
	if _, err := stale.Put(ctx, "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	if _, err := stale.Get(ctx, "k"); !errors.Is(err, nats.ErrNoResponders) {
		t.Fatalf("the stale jetstream handle reads: %v; the test no longer shows the problem", err)
	}

	h := newHandle(js, stale)
	if e, err := h.Get(ctx, "k"); err != nil || string(e.Value()) != "v" {
		t.Fatalf("Get: %v, %v", e, err)
	}
	if e, err := h.GetRevision(ctx, "k", 1); err != nil || string(e.Value()) != "v" {
		t.Fatalf("GetRevision: %v, %v", e, err)
	}
	if _, err := h.Create(ctx, "k", []byte("w")); !errors.Is(err, jetstream.ErrKeyExists) {
		t.Fatalf("Create of an existing key: %v, want ErrKeyExists", err)
	}

	// A deleted key: the stale handle cannot see the delete marker.
	if err := h.Delete(ctx, "k"); err != nil {
		t.Fatal(err)
	}
	h = newHandle(js, stale)
	if _, err := stale.Create(ctx, "k", []byte("w")); !errors.Is(err, jetstream.ErrKeyExists) {
		t.Fatalf("the stale jetstream handle creates a deleted key: %v; the test no longer shows the problem", err)
	}
	if _, err := h.Create(ctx, "k", []byte("w")); err != nil {
		t.Fatalf("Create of a deleted key: %v", err)
	}
	if e, err := h.Get(ctx, "k"); err != nil || string(e.Value()) != "w" {
		t.Fatalf("Get after Create: %v, %v", e, err)
	}
}
