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
// A handle decides how it reads when it binds (js.KeyValue), from the
// stream's configuration: the workers, which bind these buckets after
// serve set them up, read from the leader too.
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
	kv, err := js.KeyValue(ctx, cfg.Bucket)
	switch {
	case errors.Is(err, jetstream.ErrBucketNotFound):
		if _, err := js.CreateOrUpdateKeyValue(ctx, cfg); err != nil {
			return nil, err
		}
	case err != nil:
		return nil, err
	default:
		st, err := kv.Status(ctx)
		if err != nil {
			return nil, err
		}
		if !matches(st, cfg) {
			if _, err := js.CreateOrUpdateKeyValue(ctx, cfg); err != nil {
				return nil, err
			}
		}
	}
	return LeaderReads(ctx, js, cfg.Bucket)
}

// LeaderReads turns direct reads off on an existing bucket, if they are on,
// and returns a handle bound to it that reads from the leader.
func LeaderReads(ctx context.Context, js jetstream.JetStream, bucket string) (jetstream.KeyValue, error) {
	name := "KV_" + bucket
	s, err := js.Stream(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("bucket %s: %w", bucket, err)
	}
	if sc := s.CachedInfo().Config; sc.AllowDirect {
		sc.AllowDirect = false
		if _, err := js.UpdateStream(ctx, sc); err != nil {
			return nil, fmt.Errorf("bucket %s: turn direct reads off: %w", bucket, err)
		}
	}
	return js.KeyValue(ctx, bucket)
}

// matches says whether the bucket has the configuration cfg asks for, as
// far as cfg sets it, with leader reads.
func matches(st jetstream.KeyValueStatus, cfg jetstream.KeyValueConfig) bool {
	b, ok := st.(*jetstream.KeyValueBucketStatus)
	if !ok {
		return false
	}
	sc := b.StreamInfo().Config
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
