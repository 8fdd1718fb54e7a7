// Package runs keeps rotation runs in a JetStream KV bucket, so that a
// coordinator killed mid-rotation resumes it when it starts again, and every
// finished rotation can still be read. It also holds the per-user locks that
// refuse a second rotation of a user while one is running.
//
// Keys: "run.<rotation id>" holds a Run; "lock.<user token>" holds the id of
// the rotation running for that user.
package runs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/postrotate/postrotate/messages"
)

// State of a run.
type State string

const (
	StateRunning   State = "running"
	StateCompleted State = "completed" // the rotation took effect and every step succeeded in the end
	StateFailed    State = "failed"    // a step failed, the rotation did not take effect, or it could not run
)

// Step describes one planned step.
type Step struct {
	Index int    `json:"step"`
	Host  string `json:"host"`
	UID   string `json:"uid"`
	Name  string `json:"name"`
	Title string `json:"title"`
}

// Run is one rotation as stored.
type Run struct {
	SchemaVersion int       `json:"schema_version"`
	ID            string    `json:"id"`
	User          string    `json:"user"`
	State         State     `json:"state"`
	CreatedAt     time.Time `json:"created_at"`
	UpdatedAt     time.Time `json:"updated_at"`
	FinishedAt    time.Time `json:"finished_at,omitzero"`
	Steps         []Step    `json:"steps"`
	Succeeded     int       `json:"succeeded"`
	Failed        int       `json:"failed"`
	// Effect says whether the new password took effect (committed,
	// not_committed, rolled_back, rollback_failed); Note why. Set when the
	// run finishes.
	Effect     string `json:"effect,omitempty"`
	Note       string `json:"note,omitempty"`
	Unresolved int    `json:"unresolved,omitempty"`
	Error      string `json:"error,omitempty"`
	// Credentials the remaining steps need after a restart. Removed when
	// the run finishes.
	Secret *Secret `json:"secret,omitempty"`
}

// Secret holds the passwords of a running rotation.
type Secret struct {
	NewPassword string `json:"new_password"`
	OldPassword string `json:"old_password"`
}

// Finished reports whether the run has ended.
func (r Run) Finished() bool { return r.State == StateCompleted || r.State == StateFailed }

// Errors.
var (
	// ErrBusy is returned by Lock when the user has a running rotation.
	ErrBusy = errors.New("a rotation of this user is already running")
	// ErrNotFound is returned for an unknown rotation id.
	ErrNotFound = errors.New("no such rotation")
)

// BusyError names the running rotation that holds a user's lock.
type BusyError struct {
	User       string
	RotationID string
	// State is the holder's state as read: "running", or "starting" when
	// its run is not stored yet. Empty when not read.
	State string
}

func (e *BusyError) Error() string {
	if e.State == "starting" {
		return fmt.Sprintf("user %s: rotation %s is starting", e.User, e.RotationID)
	}
	return fmt.Sprintf("user %s: rotation %s is already running", e.User, e.RotationID)
}
func (e *BusyError) Unwrap() error { return ErrBusy }

// Sealer encrypts the passwords a running rotation keeps (the vault key's
// Seal and Open).
type Sealer interface {
	Seal(plaintext, aad []byte) []byte
	Open(sealed, aad []byte) ([]byte, error)
}

// Store reads and writes runs.
type Store struct {
	kv     jetstream.KeyValue
	sealer Sealer
}

// Open binds to the runs bucket of subj (created by layout.Layout.Setup).
// With a sealer, a run's Secret is stored sealed; without one (tests), in
// clear.
func Open(ctx context.Context, js jetstream.JetStream, subj messages.Subjects, sealer Sealer) (*Store, error) {
	kv, err := js.KeyValue(ctx, subj.RunsBucket())
	if err != nil {
		return nil, fmt.Errorf("open runs bucket: %w", err)
	}
	return &Store{kv: kv, sealer: sealer}, nil
}

// wireRun is a Run as stored: its Secret sealed when the store has a
// sealer.
type wireRun struct {
	Run
	Secret       *Secret `json:"secret,omitempty"`
	SealedSecret []byte  `json:"sealed_secret,omitempty"`
}

func runKey(id string) string    { return "run." + id }
func lockKey(user string) string { return "lock." + messages.HostToken(user) }

// StaleLockAge is how long a lock may name a run that is not stored before
// Lock takes it over: a coordinator takes the lock, then stores the run
// at once, and releases the lock when it cannot.
const StaleLockAge = time.Minute

// Lock takes user's lock for rotation id, or returns a *BusyError.
//
// A run is stored finished before its lock is released, so a client that
// saw a rotation finish may ask for the next one in between: a lock whose
// rotation is finished is taken over (compare-and-set on its revision),
// not reported busy.
func (s *Store) Lock(ctx context.Context, user, id string) error {
	key := lockKey(user)
	holder := "?"
	// Each lap loses to a release or a take-over that happened meanwhile;
	// a few laps settle it.
	for range 10 {
		_, err := s.kv.Create(ctx, key, []byte(id))
		if err == nil {
			return nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) {
			return fmt.Errorf("lock user %s: %w", user, err)
		}
		e, err := s.kv.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue // released meanwhile: create it again
		}
		if err != nil {
			return fmt.Errorf("lock user %s: read its lock: %w", user, err)
		}
		holder = string(e.Value())
		if holder == id {
			// Our own write, applied although its answer said otherwise
			// (a lost reply, a retried request on a cluster).
			return nil
		}
		r, err := s.Get(ctx, holder)
		switch {
		case errors.Is(err, ErrNotFound) && time.Since(e.Created()) < StaleLockAge:
			// Being stored by its coordinator.
			return &BusyError{User: user, RotationID: holder, State: "starting"}
		case errors.Is(err, ErrNotFound):
			// Its coordinator could not store the run, nor release the
			// lock: taken over.
		case err == nil && !r.Finished():
			return &BusyError{User: user, RotationID: holder, State: string(r.State)}
		case err != nil:
			return fmt.Errorf("lock user %s: read the run holding it: %w", user, err)
		}
		if _, err := s.kv.Update(ctx, key, []byte(id), e.Revision()); err == nil {
			return nil
		}
		// Released or taken meanwhile: look again.
	}
	return &BusyError{User: user, RotationID: holder}
}

// Unlock releases user's lock if rotation id holds it. A lock taken over
// meanwhile (Lock, once the run is stored finished) is left alone.
func (s *Store) Unlock(ctx context.Context, user, id string) error {
	for {
		e, err := s.kv.Get(ctx, lockKey(user))
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("unlock user %s: %w", user, err)
		}
		if string(e.Value()) != id {
			return nil
		}
		err = s.kv.Delete(ctx, lockKey(user), jetstream.LastRevision(e.Revision()))
		if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			continue // changed meanwhile: whose is it now?
		}
		if err != nil {
			return fmt.Errorf("unlock user %s: %w", user, err)
		}
		return nil
	}
}

// Put writes a run.
func (s *Store) Put(ctx context.Context, r Run) error {
	r.SchemaVersion = messages.SchemaVersion
	w := wireRun{Run: r, Secret: r.Secret}
	if r.Secret != nil && s.sealer != nil {
		plain, err := json.Marshal(r.Secret)
		if err != nil {
			return fmt.Errorf("encode run %s: %w", r.ID, err)
		}
		w.Secret, w.SealedSecret = nil, s.sealer.Seal(plain, []byte(runKey(r.ID)))
	}
	data, err := json.Marshal(w)
	if err != nil {
		return fmt.Errorf("encode run %s: %w", r.ID, err)
	}
	if _, err := s.kv.Put(ctx, runKey(r.ID), data); err != nil {
		return fmt.Errorf("store run %s: %w", r.ID, err)
	}
	return nil
}

// Get reads a run.
func (s *Store) Get(ctx context.Context, id string) (Run, error) {
	if !messages.ValidToken(id) {
		return Run{}, fmt.Errorf("rotation %q: %w", id, ErrNotFound)
	}
	e, err := s.kv.Get(ctx, runKey(id))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return Run{}, fmt.Errorf("rotation %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return Run{}, fmt.Errorf("read run %s: %w", id, err)
	}
	var w wireRun
	if err := json.Unmarshal(e.Value(), &w); err != nil {
		return Run{}, fmt.Errorf("decode run %s: %w", id, err)
	}
	r := w.Run
	r.Secret = w.Secret
	if len(w.SealedSecret) > 0 {
		if s.sealer == nil {
			return Run{}, fmt.Errorf("decode run %s: its passwords are sealed and this store has no key", id)
		}
		plain, err := s.sealer.Open(w.SealedSecret, []byte(runKey(id)))
		if err != nil {
			return Run{}, fmt.Errorf("decode run %s: open its passwords: %w", id, err)
		}
		r.Secret = new(Secret)
		if err := json.Unmarshal(plain, r.Secret); err != nil {
			return Run{}, fmt.Errorf("decode run %s: its passwords: %w", id, err)
		}
	}
	return r, nil
}

// List returns the runs, newest first; with user set, only that user's.
func (s *Store) List(ctx context.Context, user string) ([]Run, error) {
	keys, err := s.kv.ListKeysFiltered(ctx, "run.>")
	if err != nil {
		return nil, fmt.Errorf("list runs: %w", err)
	}
	var out []Run
	for k := range keys.Keys() {
		r, err := s.Get(ctx, strings.TrimPrefix(k, "run."))
		if errors.Is(err, ErrNotFound) {
			continue // deleted meanwhile
		}
		if err != nil {
			return nil, err
		}
		if user == "" || r.User == user {
			out = append(out, r)
		}
	}
	// Rotation ids are UUIDv7: time-ordered.
	slices.SortFunc(out, func(a, b Run) int { return strings.Compare(b.ID, a.ID) })
	return out, nil
}

// Locks returns the held user locks: lock key → rotation id.
func (s *Store) Locks(ctx context.Context) (map[string]string, error) {
	keys, err := s.kv.ListKeysFiltered(ctx, "lock.>")
	if err != nil {
		return nil, fmt.Errorf("list locks: %w", err)
	}
	out := map[string]string{}
	for k := range keys.Keys() {
		if e, err := s.kv.Get(ctx, k); err == nil {
			out[k] = string(e.Value())
		}
	}
	return out, nil
}

// ReleaseStale deletes the locks whose rotation is finished or was never
// stored (a coordinator killed between taking the lock and storing the run).
func (s *Store) ReleaseStale(ctx context.Context) error {
	locks, err := s.Locks(ctx)
	if err != nil {
		return err
	}
	for key, id := range locks {
		r, err := s.Get(ctx, id)
		if err == nil && !r.Finished() {
			continue
		}
		if err != nil && !errors.Is(err, ErrNotFound) {
			return err
		}
		if err := s.kv.Delete(ctx, key); err != nil {
			return fmt.Errorf("release stale lock %s: %w", key, err)
		}
	}
	return nil
}

// Probe writes a small value under key (outside the run and lock keys):
// it fails while the bucket cannot store anything.
func (s *Store) Probe(ctx context.Context, key string) error {
	if _, err := s.kv.Put(ctx, key, []byte(time.Now().UTC().Format(time.RFC3339Nano))); err != nil {
		return fmt.Errorf("write %s: %w", key, err)
	}
	return nil
}
