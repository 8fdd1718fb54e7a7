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
	"github.com/postrotate/postrotate/coordinator/plan"
	"github.com/postrotate/postrotate/coordinator/rotation"
	"github.com/postrotate/postrotate/executor"
	"github.com/postrotate/postrotate/messages/envelope"
	"github.com/postrotate/postrotate/messages/layout"
	"github.com/postrotate/postrotate/worker"
)

// Options configure a one-shot rotation. A zero field means its default.
type Options struct {
	// Logger receives the logs of every component. Defaults to disabled.
	Logger *zerolog.Logger
	// Layout is the JetStream layout set up in the embedded broker.
	Layout layout.Layout
	// Dispatch configures the dispatcher (the kill grace). Its Subjects
	// are the Layout's; its Signer and WorkerKey are set by Rotate.
	Dispatch dispatch.Options
	// PickupTimeout is how long a task may wait for its host's worker
	// before it expires and the step fails. Defaults to 1m.
	PickupTimeout time.Duration
	// Executors returns the executors of the in-process worker of host.
	// Defaults to the worker's default (a local executor).
	Executors func(host string) map[string]executor.Executor
	// StoreDir is JetStream's store. Defaults to a temporary directory
	// removed afterwards.
	StoreDir string
}

// ErrNotSupported is wrapped when a rotation needs a capability postrotate
// does not have yet.
var ErrNotSupported = plan.ErrNotSupported

// Rotate runs the rotation of the PAM User userUID of inv. It returns a
// *rotation.InputError for an unknown or unsupported user.
func Rotate(ctx context.Context, inv *inventory.Inventory, userUID string, opts Options) (rotation.Outcome, error) {
	p, newPassword, err := rotation.Prepare(inv, userUID)
	if err != nil {
		return rotation.Outcome{}, err
	}
	if _, general := p.RotationStep(); general {
		// The new password would be set on the resource and then lost:
		// one-shot mode has no record store.
		return rotation.Outcome{}, &rotation.InputError{Err: fmt.Errorf("rotation of %s: a general rotation sets a new password on %s, which only postrotate serve stores (one-shot mode would lose it): %w; run it through serve, or use scripts_only or a NOOP field here",
			userUID, p.Resource.UID, ErrNotSupported)}
	}
	log := zerolog.Nop()
	if opts.Logger != nil {
		log = *opts.Logger
	}
	b, err := broker.Start(broker.Options{StoreDir: opts.StoreDir, Logger: &log})
	if err != nil {
		return rotation.Outcome{}, err
	}
	defer b.Shutdown()
	nc, err := b.Connect(nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
		log.Error().Err(err).Msg("nats async error")
	}))
	if err != nil {
		return rotation.Outcome{}, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return rotation.Outcome{}, fmt.Errorf("jetstream: %w", err)
	}
	coord, err := envelope.NewCoordinator()
	if err != nil {
		return rotation.Outcome{}, err
	}
	keys, stop, err := startWorkers(ctx, js, coord, p.Hosts(), opts, &log)
	defer stop()
	if err != nil {
		return rotation.Outcome{}, err
	}
	dopts := opts.Dispatch
	dopts.Subjects = opts.Layout.Subjects
	dopts.Signer = coord
	dopts.WorkerKey = func(_ context.Context, host string) (string, error) { return keys[host], nil }
	e := rotation.NewEngine(dispatch.New(js, dopts), rotation.EngineOptions{PickupTimeout: opts.PickupTimeout, Logger: &log})
	out, err := e.Run(ctx, rotation.Rotation{ID: rotation.NewID(), Plan: p, NewPassword: newPassword, OldPassword: p.User.Password()})
	if err != nil {
		return out, err
	}
	e.Finished(ctx, userUID, out, "")
	if out.Effect == rotation.EffectCommitted {
		out.Note += "; one-shot mode stores no password: the inventory keeps the old one"
	}
	return out, nil
}

// startWorkers sets up the layout and starts an in-process worker for each
// of hosts, each trusting coord with a fresh curve key of its own; keys
// maps a host to its worker's curve key. stop stops them at once: it is
// called when every result is in.
func startWorkers(ctx context.Context, js jetstream.JetStream, coord *envelope.Coordinator, hosts []string, opts Options, log *zerolog.Logger) (keys map[string]string, stop func(), err error) {
	var workers []*worker.Worker
	stop = func() {
		stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 0)
		defer cancel()
		for _, w := range workers {
			_ = w.Stop(stopCtx)
		}
	}
	lay := opts.Layout
	if err := lay.Setup(ctx, js); err != nil {
		return nil, stop, err
	}
	if err := lay.EnsureHosts(ctx, js, hosts...); err != nil {
		return nil, stop, err
	}
	keys = make(map[string]string, len(hosts))
	for _, h := range hosts {
		trust, err := coord.EphemeralTrust()
		if err != nil {
			return nil, stop, err
		}
		keys[h] = trust.CurveKey()
		wo := worker.Options{Host: h, Name: h + "-inprocess", Subjects: lay.Subjects, Logger: log, FetchWait: time.Second, Trust: trust}
		if opts.Executors != nil {
			wo.Executors = opts.Executors(h)
		}
		w, err := worker.New(js, wo)
		if err != nil {
			return nil, stop, err
		}
		if err := w.Start(ctx); err != nil {
			return nil, stop, err
		}
		workers = append(workers, w)
	}
	return keys, stop, nil
}
