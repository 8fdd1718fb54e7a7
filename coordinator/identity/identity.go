package identity

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/postrotate/postrotate/coordinator/broker"
	"github.com/postrotate/postrotate/coordinator/vault"
	"github.com/postrotate/postrotate/messages"
	"github.com/postrotate/postrotate/messages/consistent"
	"github.com/postrotate/postrotate/messages/envelope"
)

const (
	coordinatorKey = "coordinator"
	workerPrefix   = "worker."
)

// Errors.
var (
	// ErrNotEnrolled is returned for a host without an identity.
	ErrNotEnrolled = errors.New("host is not enrolled")
	// ErrInvalidHost is returned by Enroll for an empty or oversized host id.
	ErrInvalidHost = errors.New("invalid host id")
)

// maxHost bounds a host id, so that its token fits in subject and
// consumer names.
const maxHost = 128

// Bucket names the identities bucket of subj: "<PREFIX>_IDENTITIES".
func Bucket(subj messages.Subjects) string {
	return strings.TrimSuffix(subj.RunsBucket(), "_RUNS") + "_IDENTITIES"
}

// Options configure a Store. A zero field means its default.
type Options struct {
	// Subjects names the bucket (Bucket). Defaults to the "postrotate"
	// prefix.
	Subjects messages.Subjects
	// Key is the vault key; the store seals with a key derived from it.
	// Required.
	Key *vault.Key
	// Replicas of the bucket. Defaults to 1.
	Replicas int
	// Storage of the bucket. Defaults to file storage.
	Storage jetstream.StorageType
	// Now returns the time. Defaults to time.Now.
	Now func() time.Time
}

// Worker is the public identity of an enrolled worker.
type Worker struct {
	Host string `json:"host"`
	// UserKey is its NATS nkey user ("U...").
	UserKey string `json:"user_key"`
	// CurveKey is its curve key ("X..."), which task secrets are sealed to.
	CurveKey  string    `json:"curve_key"`
	CreatedAt time.Time `json:"created_at"`
	// Local marks the identity of an in-process worker of `serve
	// --local-workers`, whose seeds the store keeps.
	Local bool `json:"local,omitempty"`
}

// Enrolment is a worker's identity with its seeds.
type Enrolment struct {
	Worker
	// UserSeed ("SU...") and CurveSeed ("SX...") are the worker's secrets.
	UserSeed  string `json:"-"`
	CurveSeed string `json:"-"`
	// Replaced is set when the host had an identity, which this one
	// replaces.
	Replaced bool `json:"-"`
	// Kept is set when Local returned the identity it had kept: nothing
	// changed in the store.
	Kept bool `json:"-"`
}

// stored is the sealed value of a worker's entry.
type stored struct {
	Worker
	UserSeed  string `json:"user_seed,omitempty"`
	CurveSeed string `json:"curve_seed,omitempty"`
}

type coordinatorSeeds struct {
	SignSeed  string `json:"sign_seed"`
	CurveSeed string `json:"curve_seed"`
}

// Store is the identities bucket.
type Store struct {
	kv   jetstream.KeyValue
	key  vault.Key
	now  func() time.Time
	subj messages.Subjects
}

// Open creates or updates the bucket and returns the store.
func Open(ctx context.Context, js jetstream.JetStream, opts Options) (*Store, error) {
	if opts.Key == nil {
		return nil, errors.New("identity store: the vault key is required")
	}
	bucket := Bucket(opts.Subjects)
	kv, err := consistent.KeyValue(ctx, js, jetstream.KeyValueConfig{
		Bucket:      bucket,
		Description: "postrotate identities: the coordinator's keys and the enrolled workers' public keys, sealed",
		History:     1,
		Storage:     opts.Storage,
		Replicas:    cmp.Or(opts.Replicas, 1),
	})
	if err != nil {
		return nil, fmt.Errorf("create bucket %s: %w", bucket, err)
	}
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	return &Store{kv: kv, key: opts.Key.SubKey("identities"), now: now, subj: opts.Subjects}, nil
}

// CoordinatorUser returns the coordinator's NATS nkey user, derived from
// the vault key: every coordinator with the key connects as the same user.
func CoordinatorUser(key vault.Key) nkeys.KeyPair {
	raw := key.SubKey("nats coordinator user")
	kp, err := nkeys.FromRawSeed(nkeys.PrefixByteUser, raw[:])
	if err != nil {
		panic("identity: nkey from a 32-byte seed: " + err.Error()) // 32 bytes is always a valid seed
	}
	return kp
}

func (s *Store) seal(key string, v any) ([]byte, error) {
	plain, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("encode identity %s: %w", key, err)
	}
	return s.key.Seal(plain, []byte(key)), nil
}

func (s *Store) open(key string, sealed []byte, v any) error {
	plain, err := s.key.Open(sealed, []byte(key))
	if err != nil {
		return fmt.Errorf("identity %s: %w", key, err)
	}
	if err := json.Unmarshal(plain, v); err != nil {
		return fmt.Errorf("identity %s: decode: %w", key, err)
	}
	return nil
}

// Coordinator returns the coordinator's identity, creating it on first
// use. Of several coordinators creating it at once, one wins and all use
// its identity.
func (s *Store) Coordinator(ctx context.Context) (*envelope.Coordinator, error) {
	for range 3 {
		e, err := s.kv.Get(ctx, coordinatorKey)
		if err == nil {
			var seeds coordinatorSeeds
			if err := s.open(coordinatorKey, e.Value(), &seeds); err != nil {
				return nil, err
			}
			return envelope.LoadCoordinator(seeds.SignSeed, seeds.CurveSeed)
		}
		if !errors.Is(err, jetstream.ErrKeyNotFound) {
			return nil, fmt.Errorf("read the coordinator's identity: %w", err)
		}
		c, err := envelope.NewCoordinator()
		if err != nil {
			return nil, err
		}
		var seeds coordinatorSeeds
		seeds.SignSeed, seeds.CurveSeed = c.Seeds()
		sealed, err := s.seal(coordinatorKey, seeds)
		if err != nil {
			return nil, err
		}
		_, err = s.kv.Create(ctx, coordinatorKey, sealed)
		if err == nil {
			return c, nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) {
			return nil, fmt.Errorf("store the coordinator's identity: %w", err)
		}
		// Another coordinator created it meanwhile: use that one.
	}
	return nil, errors.New("store the coordinator's identity: lost the race three times")
}

func workerKey(host string) string { return workerPrefix + messages.HostToken(host) }

func validHost(host string) error {
	switch {
	case host == "":
		return fmt.Errorf("%w: empty", ErrInvalidHost)
	case len(host) > maxHost:
		return fmt.Errorf("%w: longer than %d bytes", ErrInvalidHost, maxHost)
	}
	return nil
}

// Enroll creates a new identity for the worker of host — an nkey user and
// a curve key — stores its public keys and returns it with its seeds,
// which the store does not keep. An earlier identity of the host is
// replaced (Enrolment.Replaced): its user and key are no longer accepted.
func (s *Store) Enroll(ctx context.Context, host string) (Enrolment, error) {
	return s.enroll(ctx, host, false)
}

// Local returns the identity of the in-process worker of host, enrolling
// it (keeping its seeds) the first time. A host enrolled with Enroll, whose
// seeds are not kept, gets a new identity, which replaces it.
func (s *Store) Local(ctx context.Context, host string) (Enrolment, error) {
	if err := validHost(host); err != nil {
		return Enrolment{}, err
	}
	st, err := s.get(ctx, host)
	switch {
	case err == nil && st.Local && st.UserSeed != "" && st.CurveSeed != "":
		return Enrolment{Worker: st.Worker, UserSeed: st.UserSeed, CurveSeed: st.CurveSeed, Kept: true}, nil
	case err != nil && !errors.Is(err, ErrNotEnrolled):
		return Enrolment{}, err
	}
	return s.enroll(ctx, host, true)
}

func (s *Store) enroll(ctx context.Context, host string, keep bool) (Enrolment, error) {
	if err := validHost(host); err != nil {
		return Enrolment{}, err
	}
	user, err := nkeys.CreateUser()
	if err != nil {
		return Enrolment{}, fmt.Errorf("create nkey user: %w", err)
	}
	curve, err := nkeys.CreateCurveKeys()
	if err != nil {
		return Enrolment{}, fmt.Errorf("create curve key: %w", err)
	}
	userSeed, _ := user.Seed()
	curveSeed, _ := curve.Seed()
	userKey, _ := user.PublicKey()
	curveKey, _ := curve.PublicKey()
	en := Enrolment{
		Worker:   Worker{Host: host, UserKey: userKey, CurveKey: curveKey, CreatedAt: s.now().UTC(), Local: keep},
		UserSeed: string(userSeed), CurveSeed: string(curveSeed),
	}
	st := stored{Worker: en.Worker}
	if keep {
		st.UserSeed, st.CurveSeed = en.UserSeed, en.CurveSeed
	}
	key := workerKey(host)
	sealed, err := s.seal(key, st)
	if err != nil {
		return Enrolment{}, err
	}
	if _, err := s.kv.Get(ctx, key); err == nil {
		en.Replaced = true
	}
	if _, err := s.kv.Put(ctx, key, sealed); err != nil {
		return Enrolment{}, fmt.Errorf("store the identity of host %q: %w", host, err)
	}
	return en, nil
}

// Revoke deletes the identity of host: its user and key are no longer
// accepted. It returns ErrNotEnrolled when the host has none.
func (s *Store) Revoke(ctx context.Context, host string) error {
	if _, err := s.get(ctx, host); err != nil {
		return err
	}
	if err := s.kv.Purge(ctx, workerKey(host)); err != nil {
		return fmt.Errorf("revoke the identity of host %q: %w", host, err)
	}
	return nil
}

func (s *Store) get(ctx context.Context, host string) (stored, error) {
	key := workerKey(host)
	e, err := s.kv.Get(ctx, key)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return stored{}, fmt.Errorf("%w: %q (enroll its worker with `postrotate worker add %s`)", ErrNotEnrolled, host, host)
	case err != nil:
		return stored{}, fmt.Errorf("read the identity of host %q: %w", host, err)
	}
	var st stored
	if err := s.open(key, e.Value(), &st); err != nil {
		return stored{}, err
	}
	if st.Host != host {
		return stored{}, fmt.Errorf("identity %s: it names host %q, not %q", key, st.Host, host)
	}
	return st, nil
}

// Worker returns the public identity of host's worker, or ErrNotEnrolled.
func (s *Store) Worker(ctx context.Context, host string) (Worker, error) {
	st, err := s.get(ctx, host)
	return st.Worker, err
}

// CurveKey returns the curve key of host's worker, which its tasks'
// secrets are sealed to (dispatch.Options.WorkerKey), or ErrNotEnrolled.
func (s *Store) CurveKey(ctx context.Context, host string) (string, error) {
	w, err := s.Worker(ctx, host)
	if err != nil {
		return "", err
	}
	return w.CurveKey, nil
}

// Workers returns every enrolled worker, by host.
func (s *Store) Workers(ctx context.Context) ([]Worker, error) {
	keys, err := s.kv.ListKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("list identities: %w", err)
	}
	var out []Worker
	var errs []error
	for k := range keys.Keys() {
		if !strings.HasPrefix(k, workerPrefix) {
			continue
		}
		e, err := s.kv.Get(ctx, k)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue // revoked meanwhile
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("read identity %s: %w", k, err))
			continue
		}
		var st stored
		if err := s.open(k, e.Value(), &st); err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, st.Worker)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	slices.SortFunc(out, func(a, b Worker) int { return strings.Compare(a.Host, b.Host) })
	return out, nil
}

// Users returns the NATS users of a deployment: the coordinator's user
// (every right) and each worker's, with the rights of its host.
func Users(subj messages.Subjects, coordinatorUser string, workers []Worker) []broker.User {
	users := []broker.User{{NKey: coordinatorUser, Name: "postrotate coordinator"}}
	for _, w := range workers {
		p := broker.WorkerPermissions(subj, w.Host)
		users = append(users, broker.User{NKey: w.UserKey, Name: "postrotate worker of host " + w.Host, Permissions: &p})
	}
	return users
}

// Credentials returns the credentials file of an enrolment: its seeds, the
// coordinator's public keys, the inbox prefix and the subject prefix.
func Credentials(en Enrolment, coord *envelope.Coordinator, subj messages.Subjects, natsURL string) envelope.Credentials {
	sign, curve := coord.PublicKeys()
	return envelope.Credentials{
		Host: en.Host, NATS: natsURL, UserSeed: en.UserSeed, CurveSeed: en.CurveSeed,
		CoordinatorSigningKey: sign, CoordinatorCurveKey: curve,
		InboxPrefix: envelope.InboxPrefix(en.Host), Prefix: subj.Prefix,
	}
}
