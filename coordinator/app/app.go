// Package app assembles the coordinator service (`postrotate serve`) from
// its parts and runs them: the JetStream layout, the runs and record
// stores, the identities and the worker enrolment, the dispatcher (the
// NATS side of a rotation), the rotation engine and service, the
// scheduler, the store's health monitor, the in-process workers and the
// HTTP API's handler. Start starts them in that order; Stop stops the
// scheduler and the health monitor, then the rotations, then the
// in-process workers. Serving HTTP (and TLS) is the caller's.
package app

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/postrotate/postrotate/coordinator/broker"
	"github.com/postrotate/postrotate/coordinator/dispatch"
	"github.com/postrotate/postrotate/coordinator/identity"
	"github.com/postrotate/postrotate/coordinator/inventory"
	"github.com/postrotate/postrotate/coordinator/rotation"
	"github.com/postrotate/postrotate/coordinator/runs"
	"github.com/postrotate/postrotate/coordinator/schedule"
	"github.com/postrotate/postrotate/coordinator/server"
	"github.com/postrotate/postrotate/coordinator/vault"
	"github.com/postrotate/postrotate/messages/layout"
)

// Options configure an App. A zero field means its default.
type Options struct {
	// Inventory is the deployment's records. Required.
	Inventory *inventory.Inventory
	// Layout is the JetStream layout: Start creates or updates its
	// streams, buckets and the consumers of the inventory's hosts.
	Layout layout.Layout
	// Dispatch configures the dispatcher (its kill grace). Its Subjects
	// are the Layout's; its Signer and WorkerKey are set by Start (unless
	// Unsigned); its Logger and Now default to the App's.
	Dispatch dispatch.Options
	// PickupTimeout is how long a task may wait for its host's worker
	// before it expires and the step fails. Defaults to 1m.
	PickupTimeout time.Duration
	// Logger receives the logs of every part. Defaults to a disabled
	// logger.
	Logger *zerolog.Logger
	// Now returns the current time. Defaults to time.Now.
	Now func() time.Time
	// Key seals the record store, the identities and the passwords of
	// running rotations. Defaults to a random key: fine for tests, but the
	// store cannot be read by the next process.
	Key *vault.Key
	// KeySource says where Key came from, for error messages.
	KeySource string
	// Force makes Start's apply of the inventory replace the passwords
	// postrotate rotated since with the inventory's.
	Force bool
	// HistoryLimit is how many previous passwords a record keeps. Defaults
	// to the vault's default (10).
	HistoryLimit int
	// NoSchedules disables the scheduler: only rotations asked for run.
	NoSchedules bool
	// Clock drives the scheduler. Defaults to the real clock.
	Clock schedule.Clock
	// LeaseTTL is the scheduler's leader lease. Defaults to the
	// scheduler's default (15s).
	LeaseTTL time.Duration
	// Unsigned sends tasks unsigned, with their secrets in clear, for
	// workers started without credentials: development only, and
	// enrolment is refused. By default Start loads (or creates) the
	// coordinator's identity from the identities bucket, and every task is
	// signed with it and its secret sealed for the enrolled worker of its
	// host; a step whose host has no enrolled worker fails.
	Unsigned bool
	// OnWorkers is called with every enrolled worker at Start and after
	// each enrolment or revocation (identity.EnrollerOptions.OnWorkers).
	OnWorkers func([]identity.Worker) error
	// NATSURL is the NATS URL written into the credentials of enrolled
	// workers. Optional.
	NATSURL string
	// APIToken, when set, must come as "Authorization: Bearer <token>"
	// with every HTTP request but GET /healthz.
	APIToken string
	// StoreRetry bounds the wait between two attempts of a store write
	// that failed. Defaults to 5s.
	StoreRetry time.Duration
	// HealthEvery is how often the App checks whether the store has
	// reported write errors long enough (10s) to heal it. Defaults to 5s.
	HealthEvery time.Duration
	// Storage, when set, is the embedded broker's JetStream store: while
	// its writes fail (a full disk), GET /healthz answers 503 and the App
	// asks it to heal (broker.Heal restarts JetStream once space is back),
	// since nats-server refuses every write to a stream whose file store
	// failed one until the stream is reloaded.
	Storage Storage
	// LocalWorkers starts an in-process worker for every host of the
	// inventory (`serve --local-workers`).
	LocalWorkers bool
	// Broker is the embedded broker, nil with an external NATS: each
	// in-process worker connects to it as its own NATS user.
	Broker *broker.Broker
}

// Storage is a JetStream store that can tell its write failures and heal
// (*broker.Broker).
type Storage interface {
	// Failing returns the store's last write failure, nil when none.
	Failing() error
	// Heal restarts JetStream once the store can be written again.
	Heal() error
}

// App is the coordinator service.
type App struct {
	js   jetstream.JetStream
	opts Options
	log  zerolog.Logger

	disp      *dispatch.Dispatcher
	runs      *runs.Store
	vault     *vault.Store
	enroller  *identity.Enroller // nil when Unsigned
	rotations *rotation.Service
	sched     *schedule.Scheduler
	handler   http.Handler
	workers   *localWorkers

	mu      sync.Mutex
	stopped bool
	cancel  context.CancelFunc // ends the background goroutines
	unwatch func()
	bg      sync.WaitGroup
}

// New returns an App; Start starts it.
func New(js jetstream.JetStream, opts Options) (*App, error) {
	if opts.Inventory == nil {
		return nil, errors.New("app: inventory is required")
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	log := zerolog.Nop()
	if opts.Logger != nil {
		log = *opts.Logger
	}
	opts.Logger = &log
	opts.Layout = opts.Layout.WithDefaults()
	opts.Dispatch.Subjects = opts.Layout.Subjects
	opts.Dispatch.Logger = cmp.Or(opts.Dispatch.Logger, &log)
	if opts.Dispatch.Now == nil {
		opts.Dispatch.Now = opts.Now
	}
	opts.HealthEvery = cmp.Or(opts.HealthEvery, 5*time.Second)
	if opts.Key == nil {
		k := vault.NewKey()
		opts.Key = &k
	}
	return &App{js: js, opts: opts, log: log.With().Str("component", "app").Logger(), cancel: func() {}}, nil
}

// hosts returns every host id the inventory sends tasks to.
func hosts(inv *inventory.Inventory) []string {
	var hosts []string
	for _, r := range inv.Records {
		for _, h := range []string{r.Gateway, r.Worker} {
			if h != "" && !slices.Contains(hosts, h) {
				hosts = append(hosts, h)
			}
		}
	}
	return hosts
}

// Start creates or updates the streams, buckets and consumers, opens the
// stores and the identities, resumes the rotations a previous coordinator
// left running, then starts the health monitor, the scheduler and the
// in-process workers.
func (a *App) Start(ctx context.Context) error {
	if err := a.setupLayout(ctx); err != nil {
		return err
	}
	if err := a.openStores(ctx); err != nil {
		return err
	}
	if err := a.startRotations(ctx); err != nil {
		return err
	}
	bg, cancel := context.WithCancel(context.WithoutCancel(ctx))
	a.mu.Lock()
	a.cancel = cancel
	a.mu.Unlock()
	a.startHealth(bg)
	if err := a.startScheduler(bg); err != nil {
		return err
	}
	if err := a.startWorkers(ctx); err != nil {
		return err
	}
	return a.buildHandler()
}

// setupLayout creates or updates the streams, buckets and the consumers
// of the inventory's hosts.
func (a *App) setupLayout(ctx context.Context) error {
	lay := a.opts.Layout
	if err := lay.Setup(ctx, a.js); err != nil {
		return err
	}
	return lay.EnsureHosts(ctx, a.js, hosts(a.opts.Inventory)...)
}

// openStores opens the runs store, the record store (applying the
// inventory to it) and, unless Unsigned, the identities.
func (a *App) openStores(ctx context.Context) error {
	lay := a.opts.Layout
	store, err := runs.Open(ctx, a.js, lay.Subjects, a.opts.Key.SubKey("runs"))
	if err != nil {
		return err
	}
	a.runs = store
	if err := a.openVault(ctx, lay); err != nil {
		return err
	}
	if a.opts.Unsigned {
		return nil
	}
	ids, err := identity.Open(ctx, a.js, identity.Options{
		Subjects: lay.Subjects, Key: a.opts.Key, Replicas: lay.Replicas, Storage: lay.Storage, Now: a.opts.Now,
	})
	if err != nil {
		return err
	}
	a.enroller, err = identity.NewEnroller(ctx, ids, identity.EnrollerOptions{
		Subjects: lay.Subjects, Key: a.opts.Key, Hosts: hosts(a.opts.Inventory), NATSURL: a.opts.NATSURL,
		OnWorkers: a.opts.OnWorkers, Logger: a.opts.Logger,
	})
	return err
}

// openVault opens the record store and applies the inventory to it.
func (a *App) openVault(ctx context.Context, lay layout.Layout) error {
	v, err := vault.Open(ctx, a.js, *a.opts.Key, vault.Options{
		Bucket: lay.Subjects.RecordsBucket(), HistoryLimit: a.opts.HistoryLimit, Now: a.opts.Now,
		KeySource: a.opts.KeySource, Replicas: lay.Replicas,
	})
	if err != nil {
		return err
	}
	rep, err := v.Apply(ctx, a.opts.Inventory, vault.ApplyOptions{Force: a.opts.Force})
	if err != nil {
		return fmt.Errorf("apply the inventory to the record store: %w", err)
	}
	a.vault = v
	a.log.Info().Int("added", len(rep.Added)).Int("updated", len(rep.Updated)).Int("unchanged", len(rep.Unchanged)).
		Strs("forced", rep.Forced).Strs("missing", rep.Missing).Msg("inventory applied to the record store")
	if len(rep.KeptRotated) > 0 {
		a.log.Warn().Strs("records", rep.KeptRotated).
			Msg("the inventory's password differs from the one postrotate rotated since: the rotated one is kept (serve --force takes the inventory's)")
	}
	return nil
}

// startRotations builds the dispatcher, the engine and the rotation
// service, watches the task advisories, and resumes the rotations left
// running.
func (a *App) startRotations(ctx context.Context) error {
	dopts := a.opts.Dispatch
	if a.enroller != nil {
		dopts.Signer, dopts.WorkerKey = a.enroller.Coordinator(), a.workerKey
	}
	a.disp = dispatch.New(a.js, dopts)
	engine := rotation.NewEngine(a.disp, rotation.EngineOptions{PickupTimeout: a.opts.PickupTimeout, Logger: a.opts.Logger, Now: a.opts.Now})
	rotations, err := rotation.New(rotation.Options{
		Inventory: a.opts.Inventory, Runs: a.runs, Vault: a.vault, Engine: engine,
		Logger: a.opts.Logger, Now: a.opts.Now, StoreRetry: a.opts.StoreRetry,
	})
	if err != nil {
		return err
	}
	a.rotations = rotations
	unwatch, err := a.disp.WatchMaxDeliveries()
	if err != nil {
		return err
	}
	a.mu.Lock()
	a.unwatch = unwatch
	a.mu.Unlock()
	return rotations.Start(ctx)
}

// workerKey is the dispatcher's WorkerKey: the curve key of host's
// enrolled worker.
func (a *App) workerKey(ctx context.Context, host string) (string, error) {
	k, err := a.enroller.CurveKey(ctx, host)
	if errors.Is(err, identity.ErrNotEnrolled) {
		return "", fmt.Errorf("%w: %w", dispatch.ErrNoWorkerKey, err)
	}
	return k, err
}

// startScheduler starts firing the scheduled rotations of the inventory
// until ctx ends.
func (a *App) startScheduler(ctx context.Context) error {
	if a.opts.NoSchedules {
		return nil
	}
	lay := a.opts.Layout
	sched, err := schedule.New(a.js, schedule.Options{
		Bucket: lay.Subjects.SchedulesBucket(), Clock: a.opts.Clock, LeaseTTL: a.opts.LeaseTTL,
		Logger: a.opts.Logger, Fire: a.rotations.Scheduled, Replicas: lay.Replicas,
	})
	if err != nil {
		return err
	}
	var jobs []schedule.Job
	for _, r := range a.opts.Inventory.Records {
		if r.Type != inventory.TypeUser || r.Rotation == nil || r.Rotation.Schedule == "" {
			continue
		}
		sc, err := r.Rotation.ParsedSchedule()
		if err != nil {
			return fmt.Errorf("schedule of %s: %w", r.UID, err)
		}
		jobs = append(jobs, schedule.Job{User: r.UID, Schedule: sc})
	}
	sched.Set(jobs)
	a.sched = sched
	a.bg.Go(func() {
		if err := sched.Run(ctx); err != nil {
			a.log.Error().Err(err).Msg("scheduler stopped")
		}
	})
	return nil
}

// buildHandler builds the HTTP API over the App's services.
func (a *App) buildHandler() error {
	sopts := server.Options{
		Rotations: a.rotations, Records: a.vault, Enroller: a.enroller, Workers: a.disp.Workers,
		Health: a.health, APIToken: a.opts.APIToken, Logger: a.opts.Logger,
	}
	if a.sched != nil {
		sopts.NextRotation = a.sched.Next
	}
	srv, err := server.New(sopts)
	if err != nil {
		return err
	}
	a.handler = srv.Handler()
	return nil
}

// Handler returns the HTTP API (see server.Server.Handler). Start first.
func (a *App) Handler() http.Handler { return a.handler }

// Rotations returns the rotation service. Start first.
func (a *App) Rotations() *rotation.Service { return a.rotations }

// Enroller returns the worker enrolment, nil when tasks are sent unsigned.
// Start first.
func (a *App) Enroller() *identity.Enroller { return a.enroller }

// Stop stops the scheduler and the health monitor (waiting for them while
// ctx allows), then stops starting rotations and interrupts the running
// ones (they stay "running" in the store and resume at the next Start),
// then stops the in-process workers, letting their scripts finish for up
// to a minute. Safe to call twice.
func (a *App) Stop(ctx context.Context) error {
	a.mu.Lock()
	first := !a.stopped
	a.stopped = true
	a.cancel()
	if first && a.unwatch != nil {
		a.unwatch()
	}
	a.mu.Unlock()
	var errs []error
	done := make(chan struct{})
	go func() { a.bg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		errs = append(errs, ctx.Err())
	}
	if a.rotations != nil {
		errs = append(errs, a.rotations.Stop(ctx))
	}
	if a.workers != nil {
		errs = append(errs, a.workers.stop(ctx))
	}
	return errors.Join(errs...)
}
