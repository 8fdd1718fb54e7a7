package server

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
// it fails, GET /healthz reports it. It returns an error only when ctx ends
// or the server stops first.
func (s *Server) durably(ctx context.Context, what, rotationID string, write func(context.Context) error) error {
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
			s.clearFault(key)
			return nil
		}
		s.setFault(key, err)
		backoff = min(max(2*backoff, 100*time.Millisecond), s.opts.StoreRetry)
		s.log.Error().Err(err).Str("rotation_id", rotationID).Int("attempt", attempt).Dur("retry_in", backoff).Msg(what + " failed; retrying")
		select {
		case <-ctx.Done():
			return errors.Join(err, ctx.Err())
		case <-s.quit:
			return errors.Join(err, errors.New("server stopping"))
		case <-time.After(backoff):
		}
	}
}

// faults are the writes (and rotations) failing now, each until it
// succeeds: GET /healthz answers 503 while there is one.
type faults struct {
	mu sync.Mutex
	m  map[string]fault
}

// fault is one failing write, since its first failure.
type fault struct {
	what  string
	err   error
	since time.Time
}

func (s *Server) setFault(what string, err error) {
	s.faults.mu.Lock()
	defer s.faults.mu.Unlock()
	if s.faults.m == nil {
		s.faults.m = map[string]fault{}
	}
	f, ok := s.faults.m[what]
	if !ok {
		f.since = time.Now()
	}
	f.what, f.err = what, err
	s.faults.m[what] = f
}

func (s *Server) clearFault(what string) {
	s.faults.mu.Lock()
	defer s.faults.mu.Unlock()
	delete(s.faults.m, what)
}

// oldestFault returns the write failing for the longest time, if any.
func (s *Server) oldestFault() (fault, bool) {
	s.faults.mu.Lock()
	defer s.faults.mu.Unlock()
	var oldest fault
	found := false
	for _, f := range s.faults.m {
		if !found || f.since.Before(oldest.since) {
			oldest, found = f, true
		}
	}
	return oldest, found
}
