package identity

import (
	"context"
	"fmt"
	"slices"
	"sync"

	"github.com/rs/zerolog"

	"github.com/postrotate/postrotate/coordinator/broker"
	"github.com/postrotate/postrotate/coordinator/vault"
	"github.com/postrotate/postrotate/messages"
	"github.com/postrotate/postrotate/messages/envelope"
)

// EnrollerOptions configure an Enroller. A zero field means its default.
type EnrollerOptions struct {
	// Subjects is the deployment's subject layout, written into the
	// credentials and the workers' NATS rights.
	Subjects messages.Subjects
	// Key is the vault key, from which the coordinator's NATS user is
	// derived (CoordinatorUser). Required.
	Key *vault.Key
	// Hosts are the hosts the inventory sends tasks to
	// (Enrolled.InInventory).
	Hosts []string
	// NATSURL is the NATS URL written into the credentials. Optional.
	NATSURL string
	// OnWorkers is called with every enrolled worker when the Enroller is
	// made and after each enrolment or revocation, before the call that
	// made it returns: the embedded broker admits their NATS users
	// (broker.SetUsers with Users). Its error fails the call.
	OnWorkers func([]Worker) error
	// Logger receives the enrolments. Defaults to a disabled logger.
	Logger *zerolog.Logger
}

// Enroller enrols and revokes workers: it hands out their credentials
// and keeps the broker's users in step (OnWorkers).
type Enroller struct {
	store *Store
	coord *envelope.Coordinator
	opts  EnrollerOptions
	log   zerolog.Logger
	// mu serializes enrolments, so that OnWorkers always gets the latest
	// list last.
	mu sync.Mutex
}

// Enrolled is a worker's new identity, as POST /v1/workers/enroll returns
// it. Its Credentials hold the worker's seeds: they are given once, and
// the coordinator does not keep them.
type Enrolled struct {
	Credentials envelope.Credentials `json:"credentials"`
	// Worker is the identity's public part, as stored.
	Worker Worker `json:"worker"`
	// Replaced is set when the host had an identity, which no longer
	// works.
	Replaced bool `json:"replaced"`
	// InInventory says whether the inventory sends tasks to the host.
	InInventory bool `json:"in_inventory"`
	// NATSConfig is the authorization block of a nats-server
	// configuration that admits the coordinator and this worker with its
	// rights, for an external NATS (the embedded server admits the worker
	// at once).
	NATSConfig string `json:"nats_config"`
}

// NewEnroller loads the coordinator's identity from store (created on
// first use) and hands the enrolled workers to OnWorkers.
func NewEnroller(ctx context.Context, store *Store, opts EnrollerOptions) (*Enroller, error) {
	if opts.Key == nil {
		return nil, fmt.Errorf("identity: EnrollerOptions.Key is required")
	}
	log := zerolog.Nop()
	if opts.Logger != nil {
		log = *opts.Logger
	}
	coord, err := store.Coordinator(ctx)
	if err != nil {
		return nil, fmt.Errorf("the coordinator's identity: %w", err)
	}
	e := &Enroller{store: store, coord: coord, opts: opts, log: log.With().Str("component", "enroller").Logger()}
	sign, curve := coord.PublicKeys()
	e.log.Info().Str("signing_key", sign).Str("curve_key", curve).Msg("coordinator identity loaded")
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := e.notify(ctx); err != nil {
		return nil, err
	}
	return e, nil
}

// Coordinator returns the coordinator's identity, which signs the tasks
// and seals their secrets.
func (e *Enroller) Coordinator() *envelope.Coordinator { return e.coord }

// CurveKey returns the curve key of host's enrolled worker; the error
// wraps ErrNotEnrolled when it has none.
func (e *Enroller) CurveKey(ctx context.Context, host string) (string, error) {
	return e.store.CurveKey(ctx, host)
}

// notify gives OnWorkers the enrolled workers. mu is held.
func (e *Enroller) notify(ctx context.Context) error {
	if e.opts.OnWorkers == nil {
		return nil
	}
	all, err := e.store.Workers(ctx)
	if err != nil {
		return err
	}
	if err := e.opts.OnWorkers(all); err != nil {
		return fmt.Errorf("admit the enrolled workers: %w", err)
	}
	return nil
}

// Enroll creates the identity of host's worker (see Store.Enroll), has
// OnWorkers admit it and returns its credentials.
func (e *Enroller) Enroll(ctx context.Context, host string) (Enrolled, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	en, err := e.store.Enroll(ctx, host)
	if err != nil {
		return Enrolled{}, err
	}
	if err := e.notify(ctx); err != nil {
		return Enrolled{}, err
	}
	subj := e.opts.Subjects
	coordUser, _ := CoordinatorUser(*e.opts.Key).PublicKey()
	e.log.Info().Str("host", host).Str("user_key", en.UserKey).Str("curve_key", en.CurveKey).Bool("replaced", en.Replaced).
		Msg("worker enrolled")
	return Enrolled{
		Credentials: Credentials(en, e.coord, subj, e.opts.NATSURL),
		Worker:      en.Worker,
		Replaced:    en.Replaced,
		InInventory: slices.Contains(e.opts.Hosts, host),
		NATSConfig:  broker.Config(Users(subj, coordUser, []Worker{en.Worker})),
	}, nil
}

// Local returns the credentials of the in-process worker of host (`serve
// --local-workers`), enrolling it the first time (see Store.Local), and
// has OnWorkers admit it.
func (e *Enroller) Local(ctx context.Context, host string) (envelope.Credentials, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	en, err := e.store.Local(ctx, host)
	if err != nil {
		return envelope.Credentials{}, err
	}
	if !en.Kept {
		if err := e.notify(ctx); err != nil {
			return envelope.Credentials{}, err
		}
	}
	if en.Replaced {
		e.log.Warn().Str("host", host).Msg("the enrolled identity of this host was replaced by the in-process worker's")
	}
	return Credentials(en, e.coord, e.opts.Subjects, e.opts.NATSURL), nil
}

// Revoke deletes the identity of host's worker and has OnWorkers shut its
// user out. It returns an error wrapping ErrNotEnrolled when the host has
// none.
func (e *Enroller) Revoke(ctx context.Context, host string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := e.store.Revoke(ctx, host); err != nil {
		return err
	}
	e.log.Info().Str("host", host).Msg("worker identity revoked")
	return e.notify(ctx)
}

// Workers returns the public identities of the enrolled workers.
func (e *Enroller) Workers(ctx context.Context) ([]Worker, error) {
	return e.store.Workers(ctx)
}
