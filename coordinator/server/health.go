package server

import (
	"context"
	"fmt"
	"net/http"
	"time"
)

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

// healAfter is how long the store must have reported write errors before
// Heal is called, and how long the monitor waits between two calls: a
// restart of JetStream is for a store that stays broken, not for one slow
// write.
const healAfter = 10 * time.Second

// startHealth starts the monitor that, while the JetStream store reports
// write errors (a full disk), asks it to heal (the embedded broker restarts
// JetStream once the disk has room again), so that writes work again
// without a restart of serve, then creates again the streams and consumers
// a torn write left unloadable. Other write failures (a record too large,
// a wrong key) are for /healthz only: a restart of JetStream cannot mend
// them.
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
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			if err := s.setupLayout(ctx); err != nil {
				s.log.Error().Err(err).Msg("jetstream restarted: recreate the streams and consumers")
			}
			cancel()
		}
	}()
}

// health is GET /healthz: 200 when JetStream answers and takes a write,
// the store reports no write error and no rotation's write is failing;
// 503 with the reason otherwise.
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
	if f, ok := s.oldestFault(); ok {
		writeError(w, http.StatusServiceUnavailable, "failing since %s: %s: %v", f.since.UTC().Format(time.RFC3339), f.what, f.err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}
