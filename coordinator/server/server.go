// Package server is the coordinator as a long-lived service (`postrotate
// serve`): it keeps the JetStream layout, starts rotations on request, runs
// rotations of different users in parallel, refuses a second rotation of a
// user while one runs, and keeps every run in JetStream so that a
// coordinator killed mid-rotation resumes it when it starts again.
//
// It keeps the deployment's identities (package identity): its own, which
// signs every task and seals its secrets, and the enrolled workers', which
// Enroll creates and hands out once as a credentials file; OnWorkers lets
// the embedded broker admit their NATS users. With an API token, every
// request but GET /healthz must carry it.
package server

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/postrotate/postrotate/coordinator/dispatch"
	"github.com/postrotate/postrotate/coordinator/identity"
	"github.com/postrotate/postrotate/coordinator/inventory"
	"github.com/postrotate/postrotate/coordinator/password"
	"github.com/postrotate/postrotate/coordinator/plan"
	"github.com/postrotate/postrotate/coordinator/runs"
	"github.com/postrotate/postrotate/coordinator/schedule"
	"github.com/postrotate/postrotate/coordinator/vault"
	"github.com/postrotate/postrotate/messages"
	"github.com/postrotate/postrotate/messages/envelope"
)

// Options configure a Server. A zero field means its default.
type Options struct {
	// Inventory is the deployment's records. Required.
	Inventory *inventory.Inventory
	// Dispatch configures the dispatcher and the JetStream layout.
	Dispatch dispatch.Options
	// Logger receives the server's logs. Defaults to a disabled logger.
	Logger *zerolog.Logger
	// Now returns the current time. Defaults to time.Now.
	Now func() time.Time
	// Key seals the record store and the passwords of running rotations.
	// Defaults to a random key: fine for tests, but the store cannot be
	// read by the next process.
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
	// host (Enroll); a step whose host has no enrolled worker fails.
	Unsigned bool
	// OnWorkers is called with every enrolled worker at Start and after
	// each enrolment or revocation, before the call that made it returns:
	// the embedded broker admits their NATS users (broker.SetUsers with
	// identity.Users). Its error fails Start, or the enrolment.
	OnWorkers func([]identity.Worker) error
	// NATSURL is the NATS URL written into the credentials of enrolled
	// workers. Optional.
	NATSURL string
	// APIToken, when set, must come as "Authorization: Bearer <token>"
	// with every HTTP request but GET /healthz.
	APIToken string
	// StoreRetry bounds the wait between two attempts of a store write
	// that failed (the pending password, a run's outcome, its lock): they
	// are retried until they succeed or the server stops. Defaults to 5s.
	StoreRetry time.Duration
	// HealthEvery is how often the server checks whether the store has
	// reported write errors long enough (10s) to heal it. Defaults to 5s.
	HealthEvery time.Duration
	// Storage, when set, is the embedded broker's JetStream store: while
	// its writes fail (a full disk), GET /healthz answers 503 and the
	// server asks it to heal (broker.Heal restarts JetStream once space is
	// back), since nats-server refuses every write to a stream whose file
	// store failed one until the stream is reloaded.
	Storage Storage
}

// Storage is a JetStream store that can tell its write failures and heal
// (*broker.Broker).
type Storage interface {
	// Failing returns the store's last write failure, nil when none.
	Failing() error
	// Heal restarts JetStream once the store can be written again.
	Heal() error
}

// Server runs rotations.
type Server struct {
	js    jetstream.JetStream
	opts  Options
	log   zerolog.Logger
	disp  *dispatch.Dispatcher
	store *runs.Store
	vault *vault.Store
	sched *schedule.Scheduler
	ids   *identity.Store       // nil when Unsigned
	coord *envelope.Coordinator // nil when Unsigned
	// idMu serializes enrolments, so that OnWorkers always gets the
	// latest list last.
	idMu sync.Mutex

	// faults are the writes failing now: GET /healthz answers 503 with
	// the oldest.
	faults faults

	mu      sync.Mutex
	quit    chan struct{} // closed by Stop
	running sync.WaitGroup
	stopped bool
	unwatch func()
	schedWG sync.WaitGroup
}

// InputError marks a rotation refused because of what was asked.
type InputError struct{ Err error }

func (e *InputError) Error() string { return e.Err.Error() }
func (e *InputError) Unwrap() error { return e.Err }

// New returns a server; Start makes it ready.
func New(js jetstream.JetStream, opts Options) (*Server, error) {
	if opts.Inventory == nil {
		return nil, errors.New("server: inventory is required")
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	log := zerolog.Nop()
	if opts.Logger != nil {
		log = *opts.Logger
	}
	opts.Dispatch.Logger = cmp.Or(opts.Dispatch.Logger, &log)
	opts.StoreRetry = cmp.Or(opts.StoreRetry, 5*time.Second)
	opts.HealthEvery = cmp.Or(opts.HealthEvery, 5*time.Second)
	if opts.Key == nil {
		k := vault.NewKey()
		opts.Key = &k
	}
	return &Server{
		js:   js,
		opts: opts,
		log:  log.With().Str("component", "server").Logger(),
		quit: make(chan struct{}),
	}, nil
}

// Hosts returns every host id the inventory sends tasks to.
func Hosts(inv *inventory.Inventory) []string {
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

// Start creates or updates the streams, buckets and consumers, loads the
// identities (unless Unsigned), then resumes the rotations a previous
// coordinator left running.
func (s *Server) Start(ctx context.Context) error {
	if err := s.setupLayout(ctx); err != nil {
		return err
	}
	layout := s.opts.Dispatch.Layout
	dopts := s.opts.Dispatch
	if !s.opts.Unsigned {
		if err := s.openIdentities(ctx); err != nil {
			return err
		}
		dopts.Signer, dopts.WorkerKey = s.coord, s.workerKey
	}
	s.disp = dispatch.New(s.js, dopts)
	store, err := runs.Open(ctx, s.js, layout.Subjects, s.opts.Key.SubKey("runs"))
	if err != nil {
		return err
	}
	s.store = store
	if err := s.openVault(ctx); err != nil {
		return err
	}
	unwatch, err := s.disp.WatchMaxDeliveries()
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.unwatch = unwatch
	s.mu.Unlock()
	if err := store.ReleaseStale(ctx); err != nil {
		return err
	}
	if err := s.resume(ctx); err != nil {
		return err
	}
	s.startHealth()
	return s.startScheduler()
}

// setupLayout creates or updates the streams, buckets and the consumers
// of the inventory's hosts.
func (s *Server) setupLayout(ctx context.Context) error {
	layout := s.opts.Dispatch.Layout
	if err := layout.Setup(ctx, s.js); err != nil {
		return err
	}
	return layout.EnsureHosts(ctx, s.js, Hosts(s.opts.Inventory)...)
}

// openVault opens the record store and applies the inventory to it.
func (s *Server) openVault(ctx context.Context) error {
	v, err := vault.Open(ctx, s.js, *s.opts.Key, vault.Options{
		Bucket: s.opts.Dispatch.Layout.Subjects.RecordsBucket(), HistoryLimit: s.opts.HistoryLimit, Now: s.opts.Now,
		KeySource: s.opts.KeySource, Replicas: s.opts.Dispatch.Layout.Replicas,
	})
	if err != nil {
		return err
	}
	rep, err := v.Apply(ctx, s.opts.Inventory, vault.ApplyOptions{Force: s.opts.Force})
	if err != nil {
		return fmt.Errorf("apply the inventory to the record store: %w", err)
	}
	s.vault = v
	s.log.Info().Int("added", len(rep.Added)).Int("updated", len(rep.Updated)).Int("unchanged", len(rep.Unchanged)).
		Strs("forced", rep.Forced).Strs("missing", rep.Missing).Msg("inventory applied to the record store")
	if len(rep.KeptRotated) > 0 {
		s.log.Warn().Strs("records", rep.KeptRotated).
			Msg("the inventory's password differs from the one postrotate rotated since: the rotated one is kept (serve --force takes the inventory's)")
	}
	return nil
}

// startScheduler starts firing the scheduled rotations of the inventory.
func (s *Server) startScheduler() error {
	if s.opts.NoSchedules {
		return nil
	}
	sched, err := schedule.New(s.js, schedule.Options{
		Bucket: s.opts.Dispatch.Layout.Subjects.SchedulesBucket(), Clock: s.opts.Clock, LeaseTTL: s.opts.LeaseTTL,
		Logger: &s.log, Fire: s.fire, Replicas: s.opts.Dispatch.Layout.Replicas,
	})
	if err != nil {
		return err
	}
	var jobs []schedule.Job
	for _, r := range s.opts.Inventory.Records {
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
	s.sched = sched
	ctx, cancel := context.WithCancel(context.Background())
	s.schedWG.Add(2)
	go func() {
		defer s.schedWG.Done()
		if err := sched.Run(ctx); err != nil {
			s.log.Error().Err(err).Msg("scheduler stopped")
		}
	}()
	go func() {
		defer s.schedWG.Done()
		<-s.quit
		cancel()
	}()
	return nil
}

// fire starts a scheduled rotation. A user whose rotation is running skips
// the slot.
func (s *Server) fire(ctx context.Context, user string, slot time.Time) error {
	run, err := s.Rotate(ctx, user)
	var be *runs.BusyError
	switch {
	case errors.As(err, &be):
		s.log.Warn().Str("user_uid", user).Time("slot", slot).Str("running", be.RotationID).Msg("scheduled rotation skipped: a rotation of this user is running")
		return nil
	case err != nil:
		s.log.Error().Err(err).Str("user_uid", user).Time("slot", slot).Msg("scheduled rotation not started")
		var ie *InputError
		if errors.As(err, &ie) {
			return err // the inventory must change first: the next slot tries again
		}
		// Stopping, or the broker unreachable: the slot stays due.
		return fmt.Errorf("%w: %w", schedule.ErrRetry, err)
	}
	s.log.Info().Str("user_uid", user).Str("rotation_id", run.ID).Time("slot", slot).Msg("scheduled rotation started")
	return nil
}

// inventory returns the inventory with the passwords postrotate rotated.
func (s *Server) inventory(ctx context.Context) (*inventory.Inventory, error) {
	inv, err := s.vault.Overlay(ctx, s.opts.Inventory)
	if err != nil {
		return nil, fmt.Errorf("read the record store: %w", err)
	}
	return inv, nil
}

// resume restarts every run left in state running.
func (s *Server) resume(ctx context.Context) error {
	all, err := s.store.List(ctx, "")
	if err != nil {
		return err
	}
	inv, err := s.inventory(ctx)
	if err != nil {
		return err
	}
	for _, run := range all {
		if run.Finished() {
			continue
		}
		log := s.log.With().Str("rotation_id", run.ID).Str("user_uid", run.User).Logger()
		p, err := plan.New(inv, run.User)
		if err == nil {
			err = samePlan(run, p)
		}
		if err != nil || run.Secret == nil {
			if err == nil {
				err = errors.New("its credentials were not stored")
			}
			log.Error().Err(err).Msg("rotation cannot be resumed")
			// Every planned step gets its result; its tasks may have left,
			// so the pending password is kept as uncommitted.
			why := fmt.Errorf("cannot resume after a coordinator restart: %w", err)
			var steps []plan.Step
			for _, st := range run.Steps {
				steps = append(steps, plan.Step{Index: st.Index, Host: st.Host, RecordUID: st.UID, Script: inventory.Script{Name: st.Name, Title: st.Title}})
			}
			if _, err := s.disp.Abandon(ctx, run.ID, run.User, steps, why.Error(), func(out dispatch.Outcome) error {
				return s.finish(ctx, run, out, why)
			}); err != nil {
				return err
			}
			continue
		}
		log.Info().Msg("resuming rotation")
		s.launch(run, p, true)
	}
	return nil
}

// samePlan checks that the inventory still plans the run's steps.
func samePlan(run runs.Run, p *plan.Plan) error {
	if len(run.Steps) < len(p.Steps) {
		return fmt.Errorf("the inventory changed: %d steps planned now, %d when the rotation started", len(p.Steps), len(run.Steps))
	}
	for i, st := range p.Steps {
		if want := stepOf(st); run.Steps[i] != want {
			return fmt.Errorf("the inventory changed: step %d was %s on %s, is now %s on %s", i+1, run.Steps[i].Name, run.Steps[i].Host, want.Name, want.Host)
		}
	}
	return nil
}

func stepOf(st plan.Step) runs.Step {
	return runs.Step{Index: st.Index, Host: st.Host, UID: st.RecordUID, Name: st.Script.Name, Title: st.Script.Title}
}

// Rotate starts the rotation of user and returns its run at once. It
// returns an *InputError for an unknown or unsupported user, and a
// *runs.BusyError when the user has a running rotation.
func (s *Server) Rotate(ctx context.Context, user string) (runs.Run, error) {
	s.mu.Lock()
	stopped := s.stopped
	s.mu.Unlock()
	if stopped {
		return runs.Run{}, errors.New("server is stopping")
	}
	inv, err := s.inventory(ctx)
	if err != nil {
		return runs.Run{}, err
	}
	p, err := plan.New(inv, user)
	if err != nil {
		return runs.Run{}, &InputError{err}
	}
	if err := p.CheckSupported(); err != nil {
		return runs.Run{}, &InputError{err}
	}
	newPassword, err := password.Generate(p.User.Rotation.Complexity)
	if err != nil {
		return runs.Run{}, &InputError{fmt.Errorf("user %s: generate password: %w", user, err)}
	}
	now := s.opts.Now()
	run := runs.Run{
		ID: dispatch.NewID(), User: user, State: runs.StateRunning, CreatedAt: now, UpdatedAt: now,
		Secret: &runs.Secret{NewPassword: newPassword, OldPassword: p.User.Password()},
	}
	for _, st := range p.Steps {
		run.Steps = append(run.Steps, stepOf(st))
	}
	if err := s.store.Lock(ctx, user, run.ID); err != nil {
		return runs.Run{}, err
	}
	if err := s.store.Put(ctx, run); err != nil {
		// Released in the background, retried: a store that failed the
		// Put may fail the release too (and Lock takes a lock over whose
		// run was never stored after runs.StaleLockAge).
		s.running.Go(func() {
			_ = s.durably(context.Background(), "release the user lock", run.ID, func(ctx context.Context) error {
				return s.store.Unlock(ctx, user, run.ID)
			})
		})
		return runs.Run{}, err
	}
	s.launch(run, p, false)
	run.Secret = nil
	return run, nil
}

// launch runs a rotation in the background until it ends or Stop.
func (s *Server) launch(run runs.Run, p *plan.Plan, resume bool) {
	s.running.Add(1)
	go func() {
		defer s.running.Done()
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go func() {
			select {
			case <-s.quit:
				cancel()
			case <-ctx.Done():
			}
		}()
		// Write-ahead: the new password is in the record store before any
		// task that carries it is published.
		if err := s.durably(ctx, "store the pending password", run.ID, func(ctx context.Context) error {
			return s.vault.SetPending(ctx, run.User, run.Secret.NewPassword, run.ID)
		}); err != nil {
			s.log.Info().Str("rotation_id", run.ID).Msg("rotation not started: stopping; it starts at the next start")
			return
		}
		// A rotation that cannot go on now (JetStream not answering a read
		// or a watch) is resumed here, with a backoff, until it finishes or
		// the server stops: never left running.
		backoff := time.Duration(0)
		for attempt := 1; ; attempt++ {
			_, err := s.disp.Run(ctx, dispatch.Rotation{
				ID: run.ID, Plan: p, NewPassword: run.Secret.NewPassword, OldPassword: run.Secret.OldPassword, Resume: resume || attempt > 1,
				BeforeFinish: func(out dispatch.Outcome) error {
					return s.finish(ctx, run, out, nil)
				},
			})
			if err == nil {
				s.clearFault("run rotation " + run.ID)
				return
			}
			if ctx.Err() != nil {
				// Stopping: the run stays "running" in the store and resumes at the next start.
				s.log.Info().Str("rotation_id", run.ID).Msg("rotation interrupted by shutdown; it resumes at the next start")
				return
			}
			s.setFault("run rotation "+run.ID, err)
			backoff = min(max(2*backoff, time.Second), s.opts.StoreRetry)
			s.log.Error().Err(err).Str("rotation_id", run.ID).Int("attempt", attempt).Dur("retry_in", backoff).Msg("rotation cut short; resuming it")
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
		}
	}()
}

// finish records the end of a run: the new password committed, or kept as
// uncommitted when a target may hold it, the run stored finished, then the
// user's lock released — in that order, each write retried until it
// succeeds. It returns an error only when ctx ended first: the run stays
// running in the store and is finished by the next start.
func (s *Server) finish(ctx context.Context, run runs.Run, out dispatch.Outcome, err error) error {
	now := s.opts.Now()
	secret := run.Secret
	run.Secret = nil
	run.UpdatedAt, run.FinishedAt = now, now
	run.Succeeded, run.Failed = out.Succeeded, out.Failed
	run.Effect, run.Note, run.Unresolved = string(out.Effect), out.Note, out.Unresolved
	if run.Effect == "" {
		run.Effect = string(dispatch.EffectNotCommitted)
	}
	// Re-runs and a rollback are steps too.
	for _, rr := range out.Results {
		if rr.Step > len(run.Steps) {
			run.Steps = append(run.Steps, runs.Step{Index: rr.Step, Host: rr.Host, UID: rr.UID, Name: rr.Name, Title: rr.Title})
		}
	}
	run.State = runs.StateCompleted
	if err != nil || !out.Success() || len(out.Results) < len(run.Steps) {
		run.State = runs.StateFailed
	}
	if err != nil {
		run.Error = err.Error()
	}
	if !out.Commits() && out.Sent {
		run.Note += "; the new password may be on a target: it is kept in the record's history as uncommitted"
	}
	steps := []struct {
		what string
		do   func(context.Context) error
	}{
		{"store the rotation's password", func(ctx context.Context) error { return s.settle(ctx, run, secret, out) }},
		{"note the rotation on the record", func(ctx context.Context) error {
			return s.vault.SetLastRotation(ctx, run.User, vault.Rotation{ID: run.ID, State: string(run.State), At: run.FinishedAt, Note: run.Effect + ": " + run.Note})
		}},
		{"store the finished run", func(ctx context.Context) error { return s.store.Put(ctx, run) }},
		{"release the user lock", func(ctx context.Context) error { return s.store.Unlock(ctx, run.User, run.ID) }},
	}
	for _, st := range steps {
		if err := s.durably(ctx, st.what, run.ID, st.do); err != nil {
			return fmt.Errorf("%s: %w", st.what, err)
		}
	}
	return nil
}

// settle puts the rotation's new password where it belongs: committed
// when the rotation took effect (or a failed rollback left it set); kept
// in the history as uncommitted when a task carrying it may have left;
// dropped from pending only when nothing carried it anywhere.
func (s *Server) settle(ctx context.Context, run runs.Run, secret *runs.Secret, out dispatch.Outcome) error {
	newPassword := ""
	if secret != nil {
		newPassword = secret.NewPassword
	}
	switch {
	case out.Commits() && newPassword != "":
		return s.vault.Commit(ctx, run.User, newPassword, run.ID)
	case out.Sent || out.MayHaveChanged:
		return s.vault.KeepUncommitted(ctx, run.User, newPassword, run.ID)
	default:
		return s.vault.DropPending(ctx, run.User, run.ID)
	}
}

// View is a run with the results of its steps so far.
type View struct {
	runs.Run
	Results []messages.RotationResult `json:"results"`
}

// Get returns a run and its results so far.
func (s *Server) Get(ctx context.Context, id string) (View, error) {
	run, err := s.store.Get(ctx, id)
	if err != nil {
		return View{}, err
	}
	run.Secret = nil
	results, err := s.disp.Results(ctx, id, len(run.Steps))
	if err != nil {
		return View{}, err
	}
	if results == nil {
		results = []messages.RotationResult{}
	}
	return View{Run: run, Results: results}, nil
}

// List returns the runs, newest first, optionally of one user.
func (s *Server) List(ctx context.Context, user string) ([]runs.Run, error) {
	all, err := s.store.List(ctx, user)
	for i := range all {
		all[i].Secret = nil
	}
	return all, err
}

// Workers returns the registered, live workers.
func (s *Server) Workers(ctx context.Context) ([]messages.WorkerInfo, error) {
	kv, err := s.js.KeyValue(ctx, s.opts.Dispatch.Layout.Subjects.WorkersBucket())
	if err != nil {
		return nil, fmt.Errorf("open workers bucket: %w", err)
	}
	keys, err := kv.ListKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("list workers: %w", err)
	}
	var out []messages.WorkerInfo
	for k := range keys.Keys() {
		e, err := kv.Get(ctx, k)
		if err != nil {
			continue // expired meanwhile
		}
		var wi messages.WorkerInfo
		if json.Unmarshal(e.Value(), &wi) == nil {
			out = append(out, wi)
		}
	}
	return out, nil
}

// Stop stops starting rotations and interrupts the running ones; they stay
// "running" in the store and resume at the next Start. Safe to call twice.
func (s *Server) Stop(ctx context.Context) error {
	s.mu.Lock()
	if !s.stopped {
		s.stopped = true
		close(s.quit)
		if s.unwatch != nil {
			s.unwatch()
		}
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.running.Wait(); s.schedWG.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
