package rotation

import (
	"context"
	"errors"
	"sync"
	"time"
)

// storeAttempt bounds one attempt of a store write: a write whose answer is
// lost costs this, not the whole wait.
const storeAttempt = 5 * time.Second

// durably runs write until it succeeds, each attempt bounded by
// storeAttempt, with a backoff up to Options.StoreRetry in between. While
// it fails, Fault reports it. It returns an error only when ctx ends or
// the service stops first.
func (s *Service) durably(ctx context.Context, what, rotationID string, write func(context.Context) error) error {
	key := what + " " + rotationID
	backoff := time.Duration(0)
	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), storeAttempt)
		err := write(actx)
		cancel()
		if err == nil {
			if attempt > 1 {
				s.log.Info().Str("rotation_id", rotationID).Int("attempt", attempt).Msg(what + ": stored after retries")
			}
			s.faults.clear(key)
			return nil
		}
		s.faults.set(key, err)
		backoff = min(max(2*backoff, 100*time.Millisecond), s.opts.StoreRetry)
		s.log.Error().Err(err).Str("rotation_id", rotationID).Int("attempt", attempt).Dur("retry_in", backoff).Msg(what + " failed; retrying")
		select {
		case <-ctx.Done():
			return errors.Join(err, ctx.Err())
		case <-s.quit:
			return errors.Join(err, errors.New("rotation service stopping"))
		case <-time.After(backoff):
		}
	}
}

// Fault is a write (or a rotation) that keeps failing, since its first
// failure.
type Fault struct {
	What  string
	Err   error
	Since time.Time
}

// faults are the writes (and rotations) failing now, each until it
// succeeds.
type faults struct {
	mu sync.Mutex
	m  map[string]Fault
}

func (f *faults) set(what string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.m == nil {
		f.m = map[string]Fault{}
	}
	ft, ok := f.m[what]
	if !ok {
		ft.Since = time.Now()
	}
	ft.What, ft.Err = what, err
	f.m[what] = ft
}

func (f *faults) clear(what string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.m, what)
}

// oldest returns the write failing for the longest time, if any.
func (f *faults) oldest() (Fault, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var oldest Fault
	found := false
	for _, ft := range f.m {
		if !found || ft.Since.Before(oldest.Since) {
			oldest, found = ft, true
		}
	}
	return oldest, found
}
