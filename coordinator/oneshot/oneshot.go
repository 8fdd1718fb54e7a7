// Package oneshot performs one rotation in a single process: it starts the
// embedded nats-server, sets up the JetStream layout, starts an in-process
// worker for every host the plan needs, dispatches the rotation, and tears
// everything down. It is what `postrotate rotate --inventory` runs.
//
// One-shot rotations are signed and sealed end to end, as under serve: an
// ephemeral coordinator identity signs every task, and each in-process
// worker trusts it and has its own fresh curve key, which its tasks'
// secrets are sealed for. The keys live as long as the rotation.
package oneshot

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/postrotate/postrotate/coordinator/broker"
	"github.com/postrotate/postrotate/coordinator/dispatch"
	"github.com/postrotate/postrotate/coordinator/inventory"
	"github.com/postrotate/postrotate/coordinator/password"
	"github.com/postrotate/postrotate/coordinator/plan"
	"github.com/postrotate/postrotate/executor"
	"github.com/postrotate/postrotate/messages/envelope"
	"github.com/postrotate/postrotate/worker"
)

// Options configure a one-shot rotation. A zero field means its default.
type Options struct {
	// Logger receives the logs of every component. Defaults to disabled.
	Logger *zerolog.Logger
	// Dispatch configures the dispatcher (pickup timeout, layout). Its
	// Signer and WorkerKey are set by Rotate.
	Dispatch dispatch.Options
	// Executors returns the executors of the in-process worker of host.
	// Defaults to the worker's default (a local executor).
	Executors func(host string) map[string]executor.Executor
	// StoreDir is JetStream's store. Defaults to a temporary directory
	// removed afterwards.
	StoreDir string
}

// InputError marks a rotation refused because of what was asked (an
// unknown user, an unsupported rotation type), as opposed to a failure
// while running it.
type InputError struct{ Err error }

func (e *InputError) Error() string { return e.Err.Error() }
func (e *InputError) Unwrap() error { return e.Err }

// ErrNotSupported is wrapped when a rotation needs a capability postrotate
// does not have yet.
var ErrNotSupported = plan.ErrNotSupported

// Rotate runs the rotation of the PAM User userUID of inv.
func Rotate(ctx context.Context, inv *inventory.Inventory, userUID string, opts Options) (dispatch.Outcome, error) {
	p, err := plan.New(inv, userUID)
	if err != nil {
		return dispatch.Outcome{}, &InputError{err}
	}
	if err := p.CheckSupported(); err != nil {
		return dispatch.Outcome{}, &InputError{err}
	}
	if _, general := p.RotationStep(); general {
		// The new password would be set on the resource and then lost:
		// one-shot mode has no record store.
		return dispatch.Outcome{}, &InputError{fmt.Errorf("rotation of %s: a general rotation sets a new password on %s, which only postrotate serve stores (one-shot mode would lose it): %w; run it through serve, or use scripts_only or a NOOP field here",
			userUID, p.Resource.UID, ErrNotSupported)}
	}
	newPassword, err := password.Generate(p.User.Rotation.Complexity)
	if err != nil {
		return dispatch.Outcome{}, &InputError{fmt.Errorf("records %s: generate password: %w", userUID, err)}
	}
	log := zerolog.Nop()
	if opts.Logger != nil {
		log = *opts.Logger
	}

	b, err := broker.Start(broker.Options{StoreDir: opts.StoreDir, Logger: &log})
	if err != nil {
		return dispatch.Outcome{}, err
	}
	defer b.Shutdown()
	nc, err := b.Connect(nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
		log.Error().Err(err).Msg("nats async error")
	}))
	if err != nil {
		return dispatch.Outcome{}, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return dispatch.Outcome{}, fmt.Errorf("jetstream: %w", err)
	}
	layout := opts.Dispatch.Layout
	if err := layout.Setup(ctx, js); err != nil {
		return dispatch.Outcome{}, err
	}
	hosts := p.Hosts()
	if err := layout.EnsureHosts(ctx, js, hosts...); err != nil {
		return dispatch.Outcome{}, err
	}

	coord, err := envelope.NewCoordinator()
	if err != nil {
		return dispatch.Outcome{}, err
	}
	keys := make(map[string]string, len(hosts)) // host → its worker's curve key

	workers := make([]*worker.Worker, 0, len(hosts))
	defer func() {
		// Every result is in: nothing runs any more, stop at once.
		stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 0)
		defer cancel()
		for _, w := range workers {
			_ = w.Stop(stopCtx)
		}
	}()
	for _, h := range hosts {
		trust, err := coord.EphemeralTrust()
		if err != nil {
			return dispatch.Outcome{}, err
		}
		keys[h] = trust.CurveKey()
		wo := worker.Options{Host: h, Name: h + "-inprocess", Subjects: layout.Subjects, Logger: &log, FetchWait: time.Second, Trust: trust}
		if opts.Executors != nil {
			wo.Executors = opts.Executors(h)
		}
		w, err := worker.New(js, wo)
		if err != nil {
			return dispatch.Outcome{}, err
		}
		if err := w.Start(ctx); err != nil {
			return dispatch.Outcome{}, err
		}
		workers = append(workers, w)
	}

	dopts := opts.Dispatch
	dopts.Signer = coord
	dopts.WorkerKey = func(_ context.Context, host string) (string, error) { return keys[host], nil }
	d := dispatch.New(js, dopts)
	out, err := d.Run(ctx, dispatch.Rotation{
		ID:          dispatch.NewID(),
		Plan:        p,
		NewPassword: newPassword,
		OldPassword: p.User.Password(),
	})
	if out.Effect == dispatch.EffectCommitted {
		out.Note += "; one-shot mode stores no password: the inventory keeps the old one"
	}
	return out, err
}
