package schedule

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// leaseRecord is the value of the "leader" key.
type leaseRecord struct {
	Holder    string    `json:"holder"`
	ExpiresAt time.Time `json:"expires_at"`
}

// lease is what this scheduler knows of the lease.
type lease struct {
	// rev is the revision of the lease this scheduler holds; 0 when it
	// does not hold it.
	rev     uint64
	expires time.Time // of the lease held
	renewAt time.Time // of the lease held
	// otherExpires is when another holder's lease expires, as last read.
	otherExpires time.Time
}

// held reports whether the lease is held at now.
func (l lease) held(now time.Time) bool { return l.rev != 0 && now.Before(l.expires) }

// checkLease renews the lease when it is held and due for renewal, or tries
// to take it when it is free or expired. It reports whether this scheduler
// holds the lease afterwards.
func (s *Scheduler) checkLease(ctx context.Context, kv jetstream.KeyValue) bool {
	now := s.opts.Clock.Now()
	s.mu.Lock()
	l := s.lease
	s.mu.Unlock()
	if l.rev != 0 {
		if now.Before(l.renewAt) && now.Before(l.expires) {
			return true
		}
		rev, err := kv.Update(ctx, leaderKey, s.leaseValue(now), l.rev)
		switch {
		case err == nil:
			s.setLease(lease{rev: rev, expires: now.Add(s.opts.LeaseTTL), renewAt: now.Add(s.opts.LeaseTTL / 3)})
			return true
		case isConflict(err):
			s.log.Warn().Msg("lost the scheduler lease: another coordinator took it")
			s.setLease(lease{})
			return false
		case !now.Before(l.expires):
			s.log.Warn().Err(err).Msg("lost the scheduler lease: could not renew it before it expired")
			s.setLease(lease{})
			return false
		default:
			// Still ours until it expires; try again at the next tick.
			s.log.Warn().Err(err).Msg("renew the scheduler lease")
			l.renewAt = now.Add(s.opts.Tick)
			if l.renewAt.After(l.expires) {
				l.renewAt = l.expires
			}
			s.setLease(l)
			return true
		}
	}

	e, err := kv.Get(ctx, leaderKey)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		rev, err := kv.Create(ctx, leaderKey, s.leaseValue(now))
		return s.acquired(now, rev, err)
	}
	if err != nil {
		s.log.Warn().Err(err).Msg("read the scheduler lease")
		return false
	}
	var rec leaseRecord
	if err := json.Unmarshal(e.Value(), &rec); err == nil && rec.Holder != s.opts.Holder && now.Before(rec.ExpiresAt) {
		s.setLease(lease{otherExpires: rec.ExpiresAt})
		return false
	}
	// Expired, unreadable, or ours from before a restart: take it over.
	rev, err := kv.Update(ctx, leaderKey, s.leaseValue(now), e.Revision())
	return s.acquired(now, rev, err)
}

// acquired records the outcome of an attempt to take the lease.
func (s *Scheduler) acquired(now time.Time, rev uint64, err error) bool {
	if err != nil {
		if !isConflict(err) {
			s.log.Warn().Err(err).Msg("take the scheduler lease")
		}
		return false
	}
	s.setLease(lease{rev: rev, expires: now.Add(s.opts.LeaseTTL), renewAt: now.Add(s.opts.LeaseTTL / 3)})
	s.log.Info().Time("expires_at", now.Add(s.opts.LeaseTTL)).Msg("took the scheduler lease: firing scheduled rotations")
	return true
}

func (s *Scheduler) leaseValue(now time.Time) []byte {
	data, _ := json.Marshal(leaseRecord{Holder: s.opts.Holder, ExpiresAt: now.Add(s.opts.LeaseTTL)})
	return data
}

func (s *Scheduler) setLease(l lease) {
	s.mu.Lock()
	s.lease = l
	s.mu.Unlock()
}

// releaseLease deletes the lease if this scheduler still holds it, so that
// another scheduler takes over at its next check.
func (s *Scheduler) releaseLease(ctx context.Context, kv jetstream.KeyValue) {
	s.mu.Lock()
	l := s.lease
	s.lease = lease{}
	s.mu.Unlock()
	if l.rev == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), releaseTimeout)
	defer cancel()
	if err := kv.Delete(ctx, leaderKey, jetstream.LastRevision(l.rev)); err != nil {
		s.log.Warn().Err(err).Msg("release the scheduler lease")
		return
	}
	s.log.Info().Msg("released the scheduler lease")
}

// releaseTimeout bounds the writes a stopping scheduler makes.
const releaseTimeout = 5 * time.Second
