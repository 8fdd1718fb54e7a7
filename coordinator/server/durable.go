package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"
)

// storeFault is a store write that failed, until one succeeds again.
type storeFault struct {
	What  string
	Err   error
	Since time.Time
}

// storeAttempt bounds one attempt of a store write: a write whose answer is
// lost costs this, not the whole wait.
const storeAttempt = 5 * time.Second

// durably runs write until it succeeds, each attempt bounded by
// storeAttempt, with a backoff up to Options.StoreRetry in between. While
// it fails, GET /healthz reports it. It returns an error only when ctx ends
// first.
func (s *Server) durably(ctx context.Context, what, rotationID string, write func(context.Context) error) error {
	backoff := time.Duration(0)
	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), storeAttempt)
		err := write(actx)
		cancel()
		if err == nil {
			if attempt > 1 {
				s.log.Info().Str("rotation_id", rotationID).Int("attempt", attempt).Msg(what + ": stored after retries")
			}
			s.clearFault()
			return nil
		}
		s.setFault(what, err)
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

func (s *Server) setFault(what string, err error) {
	f := &storeFault{What: what, Err: err, Since: time.Now()}
	if old := s.fault.Load(); old != nil {
		f.Since = old.Since
	}
	s.fault.Store(f)
}

func (s *Server) clearFault() { s.fault.Store(nil) }

// healthKey is the key of the write probe in the runs bucket.
const healthKey = "health.probe"

// probe writes to JetStream: it fails while JetStream cannot store
// anything (a full disk, no quorum), although it may still answer reads.
func (s *Server) probe(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if _, err := s.js.AccountInfo(ctx); err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	if err := s.store.Probe(ctx, healthKey); err != nil {
		return fmt.Errorf("jetstream write: %w", err)
	}
	return nil
}

// healAfter is how long store writes must have failed before Heal is
// called, and how long it waits between two calls: a restart of JetStream
// is for a store that stays broken, not for one slow write.
const healAfter = 10 * time.Second

// startHealth starts the monitor that, while store writes keep failing,
// asks Storage to heal (the embedded broker restarts JetStream once the
// disk has room again), so that writes work again without a restart of
// serve, then creates again the streams and consumers a full disk left
// unloadable.
func (s *Server) startHealth() {
	if s.opts.Storage == nil {
		return
	}
	s.schedWG.Add(1)
	go func() {
		defer s.schedWG.Done()
		tick := time.NewTicker(s.opts.HealthEvery)
		defer tick.Stop()
		var failingSince, healed time.Time
		for {
			select {
			case <-s.quit:
				return
			case <-tick.C:
			}
			err := s.opts.Storage.Failing()
			if f := s.fault.Load(); err == nil && f != nil {
				err = fmt.Errorf("%s: %w", f.What, f.Err)
			}
			now := time.Now()
			switch {
			case err == nil:
				failingSince = time.Time{}
				continue
			case failingSince.IsZero():
				failingSince = now
			}
			if now.Sub(failingSince) < healAfter || now.Sub(healed) < healAfter {
				continue
			}
			healed = now
			if herr := s.opts.Storage.Heal(); herr != nil {
				s.log.Warn().Err(herr).AnErr("failing", err).Msg("store writes fail; jetstream not restarted yet")
				continue
			}
			s.log.Warn().Err(err).Msg("store writes failed: jetstream restarted")
			// A stream whose files a full disk left corrupt is not
			// reloaded: create again what is missing.
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			if err := s.setupLayout(ctx); err != nil {
				s.log.Error().Err(err).Msg("jetstream restarted: recreate the streams and consumers")
			}
			cancel()
		}
	}()
}

func (s *Server) health(w http.ResponseWriter, r *http.Request) {
	if err := s.probe(r.Context()); err != nil {
		writeError(w, http.StatusServiceUnavailable, "%v", err)
		return
	}
	if st := s.opts.Storage; st != nil {
		if err := st.Failing(); err != nil {
			writeError(w, http.StatusServiceUnavailable, "%v", err)
			return
		}
	}
	if f := s.fault.Load(); f != nil {
		// The probe works, but a rotation's write still fails.
		writeError(w, http.StatusServiceUnavailable, "store write failing since %s: %s: %v", f.Since.UTC().Format(time.RFC3339), f.What, f.Err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}
