package rotation

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/postrotate/postrotate/coordinator/inventory"
	"github.com/postrotate/postrotate/coordinator/password"
	"github.com/postrotate/postrotate/coordinator/plan"
	"github.com/postrotate/postrotate/coordinator/runs"
	"github.com/postrotate/postrotate/coordinator/schedule"
	"github.com/postrotate/postrotate/coordinator/vault"
	"github.com/postrotate/postrotate/messages"
)

// Options configure a Service. A zero field means its default.
type Options struct {
	// Inventory is the deployment's records. Required.
	Inventory *inventory.Inventory
	// Runs keeps the runs and the per-user locks. Required.
	Runs *runs.Store
	// Vault keeps the records' passwords. Required.
	Vault *vault.Store
	// Engine runs the rotations' steps. Required.
	Engine *Engine
	// Logger receives the service's logs. Defaults to a disabled logger.
	Logger *zerolog.Logger
	// Now returns the current time. Defaults to time.Now.
	Now func() time.Time
	// StoreRetry bounds the wait between two attempts of a store write
	// that failed (the pending password, a run's outcome, its lock): they
	// are retried until they succeed or the service stops. Defaults to 5s.
	StoreRetry time.Duration
}

// Service runs rotations as a long-lived service: it starts them on
// request, runs rotations of different users in parallel, refuses a second
// rotation of a user while one runs, and keeps every run in the runs store
// so that a coordinator stopped mid-rotation resumes it when it starts
// again.
//
// A rotation's new password is stored (sealed, as the record's pending
// password) before any task that carries it is sent; at the end it is
// committed, or kept as uncommitted when a target may hold it, and only
// then is the run stored finished and its final event published.
type Service struct {
	opts   Options
	log    zerolog.Logger
	faults faults

	mu      sync.Mutex
	quit    chan struct{} // closed by Stop
	stopped bool
	running sync.WaitGroup
}

// InputError marks a rotation refused because of what was asked (an
// unknown user, an unsupported rotation type), as opposed to a failure
// while running it.
type InputError struct{ Err error }

func (e *InputError) Error() string { return e.Err.Error() }
func (e *InputError) Unwrap() error { return e.Err }

// New returns a service; Start resumes the rotations left running.
func New(opts Options) (*Service, error) {
	if opts.Inventory == nil || opts.Runs == nil || opts.Vault == nil || opts.Engine == nil {
		return nil, errors.New("rotation: Inventory, Runs, Vault and Engine are required")
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	log := zerolog.Nop()
	if opts.Logger != nil {
		log = *opts.Logger
	}
	opts.StoreRetry = cmp.Or(opts.StoreRetry, 5*time.Second)
	return &Service{opts: opts, log: log.With().Str("component", "rotations").Logger(), quit: make(chan struct{})}, nil
}

// Prepare plans the rotation of user in inv and generates its new
// password. Its errors are *InputError.
func Prepare(inv *inventory.Inventory, user string) (*plan.Plan, string, error) {
	p, err := plan.New(inv, user)
	if err != nil {
		return nil, "", &InputError{err}
	}
	if err := p.CheckSupported(); err != nil {
		return nil, "", &InputError{err}
	}
	newPassword, err := password.Generate(p.User.Rotation.Complexity)
	if err != nil {
		return nil, "", &InputError{fmt.Errorf("user %s: generate password: %w", user, err)}
	}
	return p, newPassword, nil
}

// Start releases the locks of finished runs and resumes the rotations a
// previous coordinator left running; a rotation that cannot be resumed
// (the inventory changed, its passwords are gone) is finished as failed,
// every step with a published result.
func (s *Service) Start(ctx context.Context) error {
	if err := s.opts.Runs.ReleaseStale(ctx); err != nil {
		return err
	}
	all, err := s.opts.Runs.List(ctx, "")
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
		if err := s.resume(ctx, inv, run); err != nil {
			return err
		}
	}
	return nil
}

// resume launches run again, or abandons it when it cannot be resumed.
func (s *Service) resume(ctx context.Context, inv *inventory.Inventory, run runs.Run) error {
	log := s.log.With().Str("rotation_id", run.ID).Str("user_uid", run.User).Logger()
	p, err := plan.New(inv, run.User)
	if err == nil {
		err = samePlan(run, p)
	}
	if err == nil && run.Secret == nil {
		err = errors.New("its credentials were not stored")
	}
	if err == nil {
		log.Info().Msg("resuming rotation")
		s.launch(run, p, true)
		return nil
	}
	log.Error().Err(err).Msg("rotation cannot be resumed")
	// Every planned step gets its result; its tasks may have left, so the
	// pending password is kept as uncommitted.
	why := fmt.Errorf("cannot resume after a coordinator restart: %w", err)
	var steps []plan.Step
	for _, st := range run.Steps {
		steps = append(steps, plan.Step{Index: st.Index, Host: st.Host, RecordUID: st.UID, Script: inventory.Script{Name: st.Name, Title: st.Title}})
	}
	out, err := s.opts.Engine.Abandon(ctx, run.ID, steps, why.Error())
	if err != nil {
		return err
	}
	if err := s.finish(ctx, run, out, why); err != nil {
		return err
	}
	s.opts.Engine.Finished(ctx, run.User, out, why.Error())
	log.Warn().Err(why).Msg("rotation abandoned")
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

// inventory returns the inventory with the passwords postrotate rotated.
func (s *Service) inventory(ctx context.Context) (*inventory.Inventory, error) {
	inv, err := s.opts.Vault.Overlay(ctx, s.opts.Inventory)
	if err != nil {
		return nil, fmt.Errorf("read the record store: %w", err)
	}
	return inv, nil
}

// Rotate starts the rotation of user and returns its run at once. It
// returns an *InputError for an unknown or unsupported user, and a
// *runs.BusyError when the user has a running rotation.
func (s *Service) Rotate(ctx context.Context, user string) (runs.Run, error) {
	if s.stopping() {
		return runs.Run{}, errors.New("rotation service is stopping")
	}
	inv, err := s.inventory(ctx)
	if err != nil {
		return runs.Run{}, err
	}
	p, newPassword, err := Prepare(inv, user)
	if err != nil {
		return runs.Run{}, err
	}
	now := s.opts.Now()
	run := runs.Run{
		ID: NewID(), User: user, State: runs.StateRunning, CreatedAt: now, UpdatedAt: now,
		Secret: &runs.Secret{NewPassword: newPassword, OldPassword: p.User.Password()},
	}
	for _, st := range p.Steps {
		run.Steps = append(run.Steps, stepOf(st))
	}
	if err := s.opts.Runs.Lock(ctx, user, run.ID); err != nil {
		return runs.Run{}, err
	}
	if err := s.opts.Runs.Put(ctx, run); err != nil {
		// Released in the background, retried: a store that failed the
		// Put may fail the release too (and Lock takes a lock over whose
		// run was never stored after runs.StaleLockAge).
		s.spawn(func() {
			_ = s.durably(context.Background(), "release the user lock", run.ID, func(ctx context.Context) error {
				return s.opts.Runs.Unlock(ctx, user, run.ID)
			})
		})
		return runs.Run{}, err
	}
	s.launch(run, p, false)
	run.Secret = nil
	return run, nil
}

// Scheduled starts the rotation of user due at slot: it is the
// scheduler's Fire. A user whose rotation is running skips the slot; a
// rotation that could not start for a passing reason (stopping, the broker
// unreachable) is retried (schedule.ErrRetry).
func (s *Service) Scheduled(ctx context.Context, user string, slot time.Time) error {
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
		return fmt.Errorf("%w: %w", schedule.ErrRetry, err)
	}
	s.log.Info().Str("user_uid", user).Str("rotation_id", run.ID).Time("slot", slot).Msg("scheduled rotation started")
	return nil
}

// launch runs a rotation in the background until it ends or Stop. Once
// Stop began, it starts nothing: the run stays "running" in the store and
// resumes at the next start.
func (s *Service) launch(run runs.Run, p *plan.Plan, resume bool) {
	s.spawn(func() {
		ctx, cancel := s.untilStop()
		defer cancel()
		s.drive(ctx, run, p, resume)
	})
}

// spawn runs f in a goroutine Stop waits for, unless Stop began.
func (s *Service) spawn(f func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.stopped {
		s.running.Go(f)
	}
}

// stopping reports whether Stop was called.
func (s *Service) stopping() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stopped
}

// untilStop returns a context that ends when the service stops.
func (s *Service) untilStop() (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		select {
		case <-s.quit:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}

// drive stores the pending password, then runs the rotation, resuming it
// with a backoff when it is cut short (JetStream not answering a read or a
// watch), until it finishes or ctx ends: never left running.
func (s *Service) drive(ctx context.Context, run runs.Run, p *plan.Plan, resume bool) {
	log := s.log.With().Str("rotation_id", run.ID).Logger()
	// Write-ahead: the new password is in the record store before any
	// task that carries it is sent.
	if err := s.durably(ctx, "store the pending password", run.ID, func(ctx context.Context) error {
		return s.opts.Vault.SetPending(ctx, run.User, run.Secret.NewPassword, run.ID)
	}); err != nil {
		log.Info().Msg("rotation not started: stopping; it starts at the next start")
		return
	}
	r := Rotation{ID: run.ID, Plan: p, NewPassword: run.Secret.NewPassword, OldPassword: run.Secret.OldPassword, Resume: resume}
	backoff := time.Duration(0)
	for attempt := 1; ; attempt++ {
		out, err := s.opts.Engine.Run(ctx, r)
		if err == nil {
			err = s.finish(ctx, run, out, nil)
		}
		if err == nil {
			s.faults.clear("run rotation " + run.ID)
			s.opts.Engine.Finished(ctx, run.User, out, "")
			return
		}
		if ctx.Err() != nil || s.stopping() {
			// Stopping: the run stays "running" in the store and resumes at the next start.
			log.Info().Msg("rotation interrupted by shutdown; it resumes at the next start")
			return
		}
		s.faults.set("run rotation "+run.ID, err)
		// Once a run began, its next one resumes it; a run that did not
		// begin sent and announced nothing.
		var nb notBegun
		r.Resume = r.Resume || !errors.As(err, &nb)
		backoff = min(max(2*backoff, time.Second), s.opts.StoreRetry)
		log.Error().Err(err).Int("attempt", attempt).Dur("retry_in", backoff).Msg("rotation cut short; resuming it")
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
	}
}

// finish records the end of a run: the new password committed, or kept as
// uncommitted when a target may hold it, the run stored finished, then the
// user's lock released — in that order, each write retried until it
// succeeds. It returns an error only when ctx ended first: the run stays
// running in the store and is finished by the next start.
func (s *Service) finish(ctx context.Context, run runs.Run, out Outcome, err error) error {
	secret := run.Secret
	run = finished(run, out, err, s.opts.Now())
	writes := []struct {
		what string
		do   func(context.Context) error
	}{
		{"store the rotation's password", func(ctx context.Context) error { return s.settle(ctx, run, secret, out) }},
		{"note the rotation on the record", func(ctx context.Context) error {
			return s.opts.Vault.SetLastRotation(ctx, run.User, vault.Rotation{ID: run.ID, State: string(run.State), At: run.FinishedAt, Note: run.Effect + ": " + run.Note})
		}},
		{"store the finished run", func(ctx context.Context) error { return s.opts.Runs.Put(ctx, run) }},
		{"release the user lock", func(ctx context.Context) error { return s.opts.Runs.Unlock(ctx, run.User, run.ID) }},
	}
	for _, w := range writes {
		if err := s.durably(ctx, w.what, run.ID, w.do); err != nil {
			return fmt.Errorf("%s: %w", w.what, err)
		}
	}
	return nil
}

// finished is run as it is stored at its end, with out (and err, when it
// failed as a whole), without its secret.
func finished(run runs.Run, out Outcome, err error, now time.Time) runs.Run {
	run.Secret = nil
	run.UpdatedAt, run.FinishedAt = now, now
	run.Succeeded, run.Failed = out.Succeeded, out.Failed
	run.Effect, run.Note, run.Unresolved = string(cmp.Or(out.Effect, EffectNotCommitted)), out.Note, out.Unresolved
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
	return run
}

// settle puts the rotation's new password where it belongs: committed
// when the rotation took effect (or a failed rollback left it set); kept
// in the history as uncommitted when a task carrying it may have left;
// dropped from pending only when nothing carried it anywhere.
func (s *Service) settle(ctx context.Context, run runs.Run, secret *runs.Secret, out Outcome) error {
	newPassword := ""
	if secret != nil {
		newPassword = secret.NewPassword
	}
	switch {
	case out.Commits() && newPassword != "":
		return s.opts.Vault.Commit(ctx, run.User, newPassword, run.ID)
	case out.Sent || out.MayHaveChanged:
		return s.opts.Vault.KeepUncommitted(ctx, run.User, newPassword, run.ID)
	default:
		return s.opts.Vault.DropPending(ctx, run.User, run.ID)
	}
}

// View is a run with the results of its steps so far.
type View struct {
	runs.Run
	Results []messages.RotationResult `json:"results"`
}

// Get returns a run and its results so far.
func (s *Service) Get(ctx context.Context, id string) (View, error) {
	run, err := s.opts.Runs.Get(ctx, id)
	if err != nil {
		return View{}, err
	}
	run.Secret = nil
	results, err := s.opts.Engine.Results(ctx, id, len(run.Steps))
	if err != nil {
		return View{}, err
	}
	if results == nil {
		results = []messages.RotationResult{}
	}
	return View{Run: run, Results: results}, nil
}

// List returns the runs, newest first, optionally of one user.
func (s *Service) List(ctx context.Context, user string) ([]runs.Run, error) {
	all, err := s.opts.Runs.List(ctx, user)
	for i := range all {
		all[i].Secret = nil
	}
	return all, err
}

// Fault returns the write (or rotation) failing for the longest time now,
// if any: the service is unhealthy while there is one.
func (s *Service) Fault() (Fault, bool) { return s.faults.oldest() }

// Stop stops starting rotations and interrupts the running ones; they stay
// "running" in the store and resume at the next Start. Safe to call twice.
func (s *Service) Stop(ctx context.Context) error {
	s.mu.Lock()
	if !s.stopped {
		s.stopped = true
		close(s.quit)
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.running.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
