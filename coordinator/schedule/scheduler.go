package schedule

import (
	"cmp"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/postrotate/postrotate/coordinator/inventory"
	"github.com/postrotate/postrotate/messages"
	"github.com/postrotate/postrotate/messages/consistent"
)

// Job is one user's schedule.
type Job struct {
	// User is the PAM User's uid.
	User string
	// Schedule says when User is rotated; an on-demand schedule (Next
	// returns the zero time) never fires.
	Schedule inventory.Schedule
}

// Options configure a Scheduler. A zero field means its default.
type Options struct {
	// Bucket names the KV bucket of the lease and the per-user state.
	// Defaults to messages.Subjects{}.SchedulesBucket().
	Bucket string
	// Replicas of the bucket when Run creates it. Defaults to 1.
	Replicas int
	// Holder is this coordinator's id in the lease; it must differ between
	// coordinators. Defaults to "<hostname>-<pid>-<random hex>".
	Holder string
	// LeaseTTL is how long the lease lasts without renewal: how long the
	// scheduled rotations wait when their leader dies. The leader renews
	// it every LeaseTTL/3. Defaults to 15s.
	LeaseTTL time.Duration
	// Tick is the longest the scheduler sleeps between two checks: the
	// delay of a schedule change (Set) or of a retry. It also wakes at the
	// next due time and the next lease renewal, whichever comes first.
	// Defaults to 1s.
	Tick time.Duration
	// Clock is the time source. Defaults to RealClock().
	Clock Clock
	// Logger receives the scheduler's logs (component=scheduler). Defaults
	// to a disabled logger.
	Logger *zerolog.Logger
	// Fire starts the rotation of user for slot, the scheduled time it is
	// due for. It should return soon: the scheduler does nothing else
	// while Fire runs, not even renew its lease. An error is logged and
	// the slot still counts as fired (no retry storm), unless the error
	// wraps ErrRetry: then the slot is tried again at the next tick. Fire
	// must wrap ErrRetry when it did not start the rotation because ctx
	// ended, or that slot is lost. Required.
	Fire func(ctx context.Context, user string, slot time.Time) error
}

// ErrRetry, wrapped in an error of Options.Fire, has the slot fired again at
// the next tick.
var ErrRetry = errors.New("retry later")

// ErrInvalidOptions matches (with errors.Is) every error of New.
var ErrInvalidOptions = errors.New("invalid scheduler options")

// Scheduler fires the scheduled rotations when it holds the lease. See the
// package documentation.
type Scheduler struct {
	js      jetstream.JetStream
	opts    Options
	log     zerolog.Logger
	running atomic.Bool

	mu     sync.Mutex
	jobs   []Job             // sorted by user, one per user
	states map[string]stored // by user, as last read or written
	lease  lease
}

// New returns a Scheduler; Run starts it.
func New(js jetstream.JetStream, opts Options) (*Scheduler, error) {
	if js == nil {
		return nil, fmt.Errorf("%w: no JetStream", ErrInvalidOptions)
	}
	if opts.Fire == nil {
		return nil, fmt.Errorf("%w: Fire is required", ErrInvalidOptions)
	}
	if opts.LeaseTTL < 0 {
		return nil, fmt.Errorf("%w: LeaseTTL %v: must not be negative", ErrInvalidOptions, opts.LeaseTTL)
	}
	if opts.Tick < 0 {
		return nil, fmt.Errorf("%w: Tick %v: must not be negative", ErrInvalidOptions, opts.Tick)
	}
	if opts.Replicas < 0 {
		return nil, fmt.Errorf("%w: Replicas %d: must not be negative", ErrInvalidOptions, opts.Replicas)
	}
	opts.Bucket = cmp.Or(opts.Bucket, messages.Subjects{}.SchedulesBucket())
	opts.Replicas = cmp.Or(opts.Replicas, 1)
	opts.Holder = cmp.Or(opts.Holder, defaultHolder())
	opts.LeaseTTL = cmp.Or(opts.LeaseTTL, 15*time.Second)
	opts.Tick = cmp.Or(opts.Tick, time.Second)
	if opts.Clock == nil {
		opts.Clock = RealClock()
	}
	log := zerolog.Nop()
	if opts.Logger != nil {
		log = *opts.Logger
	}
	return &Scheduler{
		js:     js,
		opts:   opts,
		log:    log.With().Str("component", "scheduler").Str("holder", opts.Holder).Logger(),
		states: map[string]stored{},
	}, nil
}

func defaultHolder() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "coordinator"
	}
	var b [4]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%s-%d-%x", host, os.Getpid(), b)
}

// Set replaces the job set. It is safe to call at any time, also while Run
// runs, which applies it at its next check. A job without a user or without
// a schedule is ignored, and of two jobs for one user the last one counts.
// The state of users no longer in the set stays in the bucket, unused.
func (s *Scheduler) Set(jobs []Job) {
	byUser := make(map[string]Job, len(jobs))
	for _, j := range jobs {
		if j.User == "" || j.Schedule == nil {
			s.log.Warn().Str("user", j.User).Msg("ignore a scheduled job without a user or a schedule")
			continue
		}
		byUser[j.User] = j
	}
	sorted := make([]Job, 0, len(byUser))
	for _, j := range byUser {
		sorted = append(sorted, j)
	}
	slices.SortFunc(sorted, func(a, b Job) int { return cmp.Compare(a.User, b.User) })
	s.mu.Lock()
	s.jobs = sorted
	s.mu.Unlock()
}

// Leader reports whether this scheduler holds the lease now.
func (s *Scheduler) Leader() bool {
	now := s.opts.Clock.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lease.held(now)
}

// Next returns when user's rotation is next due, as this scheduler computes
// it from the stored state (kept up to date while Run runs, on followers
// too); false when user has no schedule in the job set or is on demand. A
// time in the past means the rotation is overdue: the leader fires it at its
// next check. For a user whose state is not stored yet, or is for another
// schedule, it is the first slot after now.
func (s *Scheduler) Next(user string) (time.Time, bool) {
	now := s.opts.Clock.Now()
	s.mu.Lock()
	i, found := slices.BinarySearchFunc(s.jobs, user, func(j Job, u string) int { return cmp.Compare(j.User, u) })
	var job Job
	if found {
		job = s.jobs[i]
	}
	cur, has := s.states[user]
	s.mu.Unlock()
	if !found {
		return time.Time{}, false
	}
	base := now
	if has && cur.state.Schedule == job.Schedule.String() {
		base = cur.state.base()
	}
	next := job.Schedule.Next(base)
	return next, !next.IsZero()
}

// Run creates or binds the bucket, then checks the lease and fires the due
// rotations until ctx is done, when it releases the lease and returns nil.
// It returns an error when the bucket cannot be created or watched. Only one
// Run at a time.
func (s *Scheduler) Run(ctx context.Context) error {
	if !s.running.CompareAndSwap(false, true) {
		return errors.New("scheduler: Run is already running")
	}
	defer s.running.Store(false)

	kv, err := s.bind(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	w, err := kv.WatchFiltered(ctx, []string{userPrefix + ">"})
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("watch bucket %s: %w", s.opts.Bucket, err)
	}
	ready := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() { s.watch(w, ready) })
	defer func() {
		_ = w.Stop() // closes the updates channel, which ends watch
		wg.Wait()
	}()
	defer s.releaseLease(ctx, kv)

	select {
	case <-ready:
	case <-ctx.Done():
		return nil
	}
	s.log.Info().Str("bucket", s.opts.Bucket).Msg("scheduler started")
	for {
		wait := s.tick(ctx, kv)
		select {
		case <-ctx.Done():
			return nil
		case <-s.opts.Clock.After(wait):
		}
	}
}

// bind creates the bucket (or updates its configuration) and binds it, with
// reads from the stream's leader (package consistent).
func (s *Scheduler) bind(ctx context.Context) (jetstream.KeyValue, error) {
	kv, err := consistent.KeyValue(ctx, s.js, jetstream.KeyValueConfig{
		Bucket:      s.opts.Bucket,
		Description: "postrotate schedulers: leader lease and the last slot fired per user",
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    s.opts.Replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("create bucket %s: %w", s.opts.Bucket, err)
	}
	return kv, nil
}

// watch keeps the state cache up to date until the watcher stops; it closes
// ready once the initial values are in (or the watcher stopped before).
func (s *Scheduler) watch(w jetstream.KeyWatcher, ready chan struct{}) {
	var once sync.Once
	defer once.Do(func() { close(ready) })
	for e := range w.Updates() {
		if e == nil {
			once.Do(func() { close(ready) })
			continue
		}
		user, ok := userOfKey(e.Key())
		if !ok {
			continue
		}
		if e.Operation() == jetstream.KeyValuePut {
			s.cache(user, stored{state: decodeState(e.Value()), rev: e.Revision()})
		} else {
			s.uncache(user, e.Revision())
		}
	}
}

// cache records a state unless a later revision is known.
func (s *Scheduler) cache(user string, st stored) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if cur, ok := s.states[user]; !ok || cur.rev < st.rev {
		s.states[user] = st
	}
}

// uncache forgets a state deleted at revision rev.
func (s *Scheduler) uncache(user string, rev uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if cur, ok := s.states[user]; ok && cur.rev < rev {
		delete(s.states, user)
	}
}

// reload reads user's state again after a failed compare-and-set.
func (s *Scheduler) reload(ctx context.Context, kv jetstream.KeyValue, user string) error {
	e, err := kv.Get(ctx, userKey(user))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		s.mu.Lock()
		delete(s.states, user)
		s.mu.Unlock()
		return nil
	}
	if err != nil {
		return fmt.Errorf("read schedule state of %s: %w", user, err)
	}
	s.mu.Lock()
	s.states[user] = stored{state: decodeState(e.Value()), rev: e.Revision()}
	s.mu.Unlock()
	return nil
}

// tick checks the lease and, when this scheduler leads, fires the due
// rotations. It returns how long to sleep: until the next due time, the
// next lease renewal or check, or Tick, whichever comes first.
func (s *Scheduler) tick(ctx context.Context, kv jetstream.KeyValue) time.Duration {
	now := s.opts.Clock.Now()
	wake := now.Add(s.opts.Tick)
	earlier := func(t time.Time) {
		if t.After(now) && t.Before(wake) {
			wake = t
		}
	}
	if s.checkLease(ctx, kv) {
		s.mu.Lock()
		jobs := s.jobs
		s.mu.Unlock()
		for _, j := range jobs {
			if ctx.Err() != nil || !s.checkLease(ctx, kv) {
				break // stop firing at once
			}
			next, err := s.runJob(ctx, kv, j)
			if err != nil {
				s.log.Error().Err(err).Str("user", j.User).Msg("check scheduled rotation")
				break // NATS is in trouble: try again at the next tick
			}
			earlier(next)
		}
	}
	s.mu.Lock()
	l := s.lease
	s.mu.Unlock()
	if l.rev != 0 {
		earlier(l.renewAt)
	} else {
		earlier(l.otherExpires)
	}
	return wake.Sub(s.opts.Clock.Now())
}

// runJob brings j's state up to date and fires it when due. It returns when
// j is next due: zero when unknown or never.
func (s *Scheduler) runJob(ctx context.Context, kv jetstream.KeyValue, j Job) (time.Time, error) {
	schedule := j.Schedule.String()
	for range 2 { // a failed compare-and-set reloads the state and tries again once
		now := s.opts.Clock.Now()
		if j.Schedule.Next(now).IsZero() {
			return time.Time{}, nil // on demand
		}
		s.mu.Lock()
		cur, ok := s.states[j.User]
		s.mu.Unlock()

		if !ok || cur.state.Schedule != schedule {
			// First seen, or a new schedule: it starts now.
			st := userState{User: j.User, Schedule: schedule, Since: now, LastFiredAt: cur.state.LastFiredAt}
			rev, err := writeState(ctx, kv, st, cur.rev, ok)
			if isConflict(err) {
				if err := s.reload(ctx, kv, j.User); err != nil {
					return time.Time{}, err
				}
				continue
			}
			if err != nil {
				return time.Time{}, err
			}
			s.cache(j.User, stored{state: st, rev: rev})
			s.log.Info().Str("user", j.User).Str("schedule", schedule).Msg("schedule set")
			return j.Schedule.Next(now), nil
		}

		base := cur.state.base()
		next := j.Schedule.Next(base)
		if next.IsZero() || next.After(now) {
			return next, nil
		}
		// Due. Claim the latest slot due, then fire it.
		slot := latestSlot(j.Schedule, base, now)
		st := cur.state
		st.LastSlot, st.LastFiredAt = slot, now
		rev, err := writeState(ctx, kv, st, cur.rev, true)
		if isConflict(err) {
			if err := s.reload(ctx, kv, j.User); err != nil {
				return time.Time{}, err
			}
			continue
		}
		if err != nil {
			return time.Time{}, err
		}
		s.cache(j.User, stored{state: st, rev: rev})
		return s.fire(ctx, kv, j, slot, cur.state, rev), nil
	}
	return time.Time{}, nil // written by someone else meanwhile: next tick
}

// fire calls Fire for a claimed slot. On ErrRetry it puts back prev, the
// state before the claim (written at rev), so that the slot is due again.
func (s *Scheduler) fire(ctx context.Context, kv jetstream.KeyValue, j Job, slot time.Time, prev userState, rev uint64) time.Time {
	log := s.log.With().Str("user", j.User).Time("slot", slot).Logger()
	err := s.opts.Fire(ctx, j.User, slot)
	switch {
	case err == nil:
		log.Info().Msg("scheduled rotation fired")
	case errors.Is(err, ErrRetry):
		log.Warn().Err(err).Msg("scheduled rotation not started: retrying at the next tick")
		wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), releaseTimeout)
		defer cancel()
		back, werr := writeState(wctx, kv, prev, rev, true)
		if werr != nil {
			log.Error().Err(werr).Msg("put the slot back: it counts as fired")
			return j.Schedule.Next(slot)
		}
		s.cache(j.User, stored{state: prev, rev: back})
		return time.Time{} // the next tick
	default:
		log.Error().Err(err).Msg("scheduled rotation failed to start: the slot counts as fired")
	}
	return j.Schedule.Next(slot)
}
