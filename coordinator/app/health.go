package app

import (
	"context"
	"fmt"
	"time"
)

// healthKey is the key of the write probe in the runs bucket.
const healthKey = "health.probe"

// health answers GET /healthz: nil when JetStream answers and takes a
// write, the store reports no write error and no rotation's write is
// failing; else why not.
func (a *App) health(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if _, err := a.js.AccountInfo(ctx); err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	// A write: JetStream may answer reads while it cannot store anything
	// (a full disk, no quorum).
	if err := a.runs.Probe(ctx, healthKey); err != nil {
		return fmt.Errorf("jetstream write: %w", err)
	}
	if st := a.opts.Storage; st != nil {
		if err := st.Failing(); err != nil {
			return err
		}
	}
	if f, ok := a.rotations.Fault(); ok {
		return fmt.Errorf("failing since %s: %s: %w", f.Since.UTC().Format(time.RFC3339), f.What, f.Err)
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
// them. It runs until ctx ends.
func (a *App) startHealth(ctx context.Context) {
	if a.opts.Storage == nil {
		return
	}
	a.bg.Go(func() {
		tick := time.NewTicker(a.opts.HealthEvery)
		defer tick.Stop()
		var failingSince, healed time.Time
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			err := a.opts.Storage.Failing()
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
			a.heal(ctx, err)
		}
	})
}

// heal restarts JetStream, then creates the layout again.
func (a *App) heal(ctx context.Context, failing error) {
	if herr := a.opts.Storage.Heal(); herr != nil {
		a.log.Warn().Err(herr).AnErr("failing", failing).Msg("store writes fail; jetstream not restarted yet")
		return
	}
	a.log.Warn().Err(failing).Msg("store writes failed: jetstream restarted")
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := a.setupLayout(ctx); err != nil {
		a.log.Error().Err(err).Msg("jetstream restarted: recreate the streams and consumers")
	}
}
