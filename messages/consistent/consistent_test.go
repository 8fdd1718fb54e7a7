package consistent

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

func streamConfig(t *testing.T, js jetstream.JetStream, bucket string) jetstream.StreamConfig {
	t.Helper()
	s, err := js.Stream(t.Context(), "KV_"+bucket)
	if err != nil {
		t.Fatal(err)
	}
	return s.CachedInfo().Config
}

func TestKeyValue(t *testing.T) {
	js := jetStream(t)
	ctx := t.Context()
	cfg := jetstream.KeyValueConfig{Bucket: "B", Description: "test bucket", History: 1, TTL: time.Hour}

	// Created with leader reads.
	kv, err := KeyValue(ctx, js, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if sc := streamConfig(t, js, "B"); sc.AllowDirect || sc.MaxAge != time.Hour {
		t.Fatalf("created: AllowDirect %v, MaxAge %s; want false, 1h", sc.AllowDirect, sc.MaxAge)
	}
	if _, err := kv.Put(ctx, "k", []byte("v1")); err != nil {
		t.Fatal(err)
	}
	if e, err := kv.Get(ctx, "k"); err != nil || string(e.Value()) != "v1" {
		t.Fatalf("get: %v, %v", e, err)
	}

	// Opened again with the same configuration: untouched, same data.
	before := streamConfig(t, js, "B")
	kv, err = KeyValue(ctx, js, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if after := streamConfig(t, js, "B"); after.AllowDirect || after.MaxAge != before.MaxAge {
		t.Fatalf("reopened: %+v", after)
	}
	if e, err := kv.Get(ctx, "k"); err != nil || string(e.Value()) != "v1" {
		t.Fatalf("get after reopening: %v, %v", e, err)
	}

	// Another configuration: updated, still with leader reads.
	cfg.TTL = 2 * time.Hour
	kv, err = KeyValue(ctx, js, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if sc := streamConfig(t, js, "B"); sc.AllowDirect || sc.MaxAge != 2*time.Hour {
		t.Fatalf("updated: AllowDirect %v, MaxAge %s; want false, 2h", sc.AllowDirect, sc.MaxAge)
	}
	if e, err := kv.Get(ctx, "k"); err != nil || string(e.Value()) != "v1" {
		t.Fatalf("get after the update: %v, %v", e, err)
	}
}

// A bucket nats.go created (direct gets on) is switched to leader reads.
func TestLeaderReadsTurnsDirectOff(t *testing.T) {
	js := jetStream(t)
	ctx := t.Context()
	if _, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "OLD"}); err != nil {
		t.Fatal(err)
	}
	if !streamConfig(t, js, "OLD").AllowDirect {
		t.Fatal("nats.go no longer creates buckets with direct gets: this package may be unneeded")
	}
	kv, err := LeaderReads(ctx, js, "OLD")
	if err != nil {
		t.Fatal(err)
	}
	if streamConfig(t, js, "OLD").AllowDirect {
		t.Fatal("direct gets still on")
	}
	if _, err := kv.Put(ctx, "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	if e, err := kv.Get(ctx, "k"); err != nil || string(e.Value()) != "v" {
		t.Fatalf("get: %v, %v", e, err)
	}
	if _, err := LeaderReads(ctx, js, "MISSING"); err == nil {
		t.Fatal("LeaderReads of a missing bucket: no error")
	}
}
