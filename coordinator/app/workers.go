package app

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/postrotate/postrotate/worker"
	"github.com/postrotate/postrotate/worker/natsconn"
)

// localWorkers are the in-process workers of `serve --local-workers`.
type localWorkers struct {
	workers []*worker.Worker
	conns   []*nats.Conn
}

// startWorkers starts an in-process worker for every host, when asked.
// Each gets its identity from the store (created on first start, then
// reused) and, with the embedded server, its own connection as its own
// NATS user; with an external NATS they share the coordinator's
// connection.
func (a *App) startWorkers(ctx context.Context) error {
	if !a.opts.LocalWorkers {
		return nil
	}
	a.workers = &localWorkers{}
	for _, h := range hosts(a.opts.Inventory) {
		if err := a.startWorker(ctx, h); err != nil {
			return err
		}
	}
	return nil
}

func (a *App) startWorker(ctx context.Context, host string) error {
	wopts := worker.Options{Host: host, Name: host + "-inprocess", Subjects: a.opts.Layout.Subjects, Logger: a.opts.Logger}
	wjs := a.js
	if a.enroller != nil {
		creds, err := a.enroller.Local(ctx, host)
		if err != nil {
			return fmt.Errorf("identity of the in-process worker of %s: %w", host, err)
		}
		if wopts.Trust, err = creds.Trust(); err != nil {
			return err
		}
		if b := a.opts.Broker; b != nil {
			wlog := a.opts.Logger.With().Str("host", host).Logger()
			nopts, err := natsconn.Options(natsconn.Config{Host: host, Creds: &creds, Logger: &wlog})
			if err != nil {
				return err
			}
			nc, err := b.Connect(append(nopts, nats.Name("postrotate in-process worker "+host))...)
			if err != nil {
				return fmt.Errorf("connect the in-process worker of %s: %w", host, err)
			}
			a.workers.conns = append(a.workers.conns, nc)
			if wjs, err = jetstream.New(nc); err != nil {
				return err
			}
		}
	}
	w, err := worker.New(wjs, wopts)
	if err != nil {
		return err
	}
	if err := w.Start(ctx); err != nil {
		return err
	}
	a.workers.workers = append(a.workers.workers, w)
	return nil
}

// stop stops the workers together, letting their scripts finish for up to
// a minute, then closes their connections.
func (l *localWorkers) stop(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	for _, w := range l.workers {
		wg.Go(func() {
			if err := w.Stop(ctx); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	for _, nc := range l.conns {
		nc.Close()
	}
	return errors.Join(errs...)
}
