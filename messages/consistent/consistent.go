// Package consistent opens JetStream key-value buckets whose reads see the
// writes before them.
//
// nats.go creates every bucket with AllowDirect set: a Get is then answered
// by any replica of the bucket's stream, and a follower that has not yet
// applied the latest writes answers with an older value or "not found". On
// a single server that never shows; on a cluster with replicas it does: a
// rotation created through the API was "not found" by the next request, a
// moment later (tests/integration, three NATS nodes at R3). postrotate's
// buckets hold state that a read must see as written — runs, records,
// started markers, identities, leases — so their streams have AllowDirect
// off and every Get goes to the stream's leader.
//
// A jetstream handle decides how it reads when it binds (js.KeyValue), from
// the stream's configuration: the workers, which bind these buckets after
// serve set them up, read from the leader too. The handles this package
// returns also survive a switch after they were bound (see handle).
package consistent

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// KeyValue creates the bucket of cfg, or updates it when its configuration
// differs, with leader reads, and returns a handle bound to it. An existing
// bucket whose configuration already matches is left untouched (no moment
// with direct reads on).
func KeyValue(ctx context.Context, js jetstream.JetStream, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	s, err := js.Stream(ctx, streamName(cfg.Bucket))
	switch {
	case err == nil && matches(s.CachedInfo().Config, cfg):
		return bind(ctx, js, cfg.Bucket)
	case err == nil, errors.Is(err, jetstream.ErrStreamNotFound):
		if _, err := js.CreateOrUpdateKeyValue(ctx, cfg); err != nil {
			return nil, err
		}
		return LeaderReads(ctx, js, cfg.Bucket)
	default:
		return nil, fmt.Errorf("bucket %s: %w", cfg.Bucket, err)
	}
}

// LeaderReads turns direct reads off on an existing bucket, if they are on,
// and returns a handle bound to it that reads from the leader.
func LeaderReads(ctx context.Context, js jetstream.JetStream, bucket string) (jetstream.KeyValue, error) {
	s, err := js.Stream(ctx, streamName(bucket))
	if err != nil {
		return nil, fmt.Errorf("bucket %s: %w", bucket, err)
	}
	if sc := s.CachedInfo().Config; sc.AllowDirect {
		sc.AllowDirect = false
		if _, err := js.UpdateStream(ctx, sc); err != nil {
			return nil, fmt.Errorf("bucket %s: turn direct reads off: %w", bucket, err)
		}
	}
	return bind(ctx, js, bucket)
}

// bind returns a handle of bucket that keeps reading from the leader
// (handle).
func bind(ctx context.Context, js jetstream.JetStream, bucket string) (jetstream.KeyValue, error) {
	kv, err := js.KeyValue(ctx, bucket)
	if err != nil {
		return nil, err
	}
	return newHandle(js, kv), nil
}

// streamName is the name of the stream that holds bucket.
func streamName(bucket string) string { return "KV_" + bucket }

// matches says whether the bucket has the configuration cfg asks for, as
// far as cfg sets it, with leader reads.
func matches(sc jetstream.StreamConfig, cfg jetstream.KeyValueConfig) bool {
	history := cfg.History
	if history == 0 {
		history = 1
	}
	replicas := cfg.Replicas
	if replicas == 0 {
		replicas = 1
	}
	return !sc.AllowDirect &&
		sc.Description == cfg.Description &&
		sc.MaxMsgsPerSubject == int64(history) &&
		sc.MaxAge == cfg.TTL &&
		sc.Replicas == replicas &&
		sc.Storage == cfg.Storage &&
		(cfg.MaxBytes == 0 || sc.MaxBytes == cfg.MaxBytes) &&
		(cfg.MaxValueSize == 0 || sc.MaxMsgSize == cfg.MaxValueSize) &&
		(cfg.LimitMarkerTTL == 0 || sc.SubjectDeleteMarkerTTL == cfg.LimitMarkerTTL)
}
