package vault

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/postrotate/postrotate/coordinator/inventory"
	"github.com/postrotate/postrotate/messages"
	"github.com/postrotate/postrotate/messages/consistent"
)

// Sources of a password (Version.Source) and of an entry's current password
// (Entry.Source: SourceInventory or SourceRotation).
const (
	// SourceInventory: taken from the inventory when it was applied.
	SourceInventory = "inventory"
	// SourceRotation: committed by a rotation.
	SourceRotation = "rotation"
	// SourceForced: taken from the inventory by Apply with Force over a
	// password a rotation had committed.
	SourceForced = "forced"
)

const (
	// checkKey holds a sealed constant that tells whether a key opens the
	// store.
	checkKey = "_check"
	// checkValue is the plaintext sealed under checkKey.
	checkValue = "postrotate record store"
	// recordPrefix starts the key of every record.
	recordPrefix = "rec."
	// maxAttempts bounds the retries of a read-modify-write that keeps
	// losing the race to concurrent writers.
	maxAttempts = 1000
)

// ErrNotFound is returned for a record that is not in the store.
var ErrNotFound = errors.New("no such record in the store")

// Options configure the store. A zero field means its default.
type Options struct {
	// Bucket is the KV bucket. Defaults to
	// messages.Subjects{}.RecordsBucket().
	Bucket string
	// Replicas of the bucket. Defaults to 1.
	Replicas int
	// Storage of the bucket. Defaults to jetstream.FileStorage.
	Storage jetstream.StorageType
	// HistoryLimit is the number of previous passwords kept per record,
	// the current one excluded. Defaults to 10.
	HistoryLimit int
	// UncommittedInRecord is how many uncommitted passwords a record keeps
	// in itself: older ones move to archive entries of their own (never
	// dropped; Archived lists them), so that a record whose rotations keep
	// failing does not outgrow a message. Defaults to 20.
	UncommittedInRecord int
	// KeySource says where the key came from (LoadKey's source), for the
	// error Open returns when the key is not the store's. Empty: the error
	// speaks of "the vault key".
	KeySource string
	// Now returns the time. Defaults to time.Now.
	Now func() time.Time
}

func (o Options) withDefaults() Options {
	o.Bucket = cmp.Or(o.Bucket, messages.Subjects{}.RecordsBucket())
	o.Replicas = cmp.Or(o.Replicas, 1)
	o.HistoryLimit = cmp.Or(o.HistoryLimit, 10)
	o.UncommittedInRecord = cmp.Or(o.UncommittedInRecord, 20)
	if o.Now == nil {
		o.Now = time.Now
	}
	return o
}

func (o Options) validate() error {
	if o.Replicas < 1 {
		return fmt.Errorf("record store: replicas %d: must be at least 1", o.Replicas)
	}
	if o.HistoryLimit < 0 {
		return fmt.Errorf("record store: history limit %d: must not be negative", o.HistoryLimit)
	}
	return nil
}

// Version is one password of a record.
type Version struct {
	Password string `json:"password"`
	// SetAt is when the password became the current one.
	SetAt time.Time `json:"set_at"`
	// RotationID is the rotation that committed it, if any.
	RotationID string `json:"rotation_id,omitempty"`
	// Source is SourceInventory, SourceRotation, SourceForced, in the
	// history only SourceUncommitted, and SourcePending for
	// Entry.Pending.
	Source string `json:"source"`
}

// Rotation summarises the last rotation of a record, as set by the server.
type Rotation struct {
	ID    string    `json:"id"`
	State string    `json:"state"`
	At    time.Time `json:"at"`
	Note  string    `json:"note,omitempty"`
}

// Entry is a record as stored.
type Entry struct {
	// Record is the record as last applied from the inventory, except that
	// its first password field holds the current password (a password
	// field is added when a rotation committed a password to a record that
	// has none, so that Record.Password() is always Password()).
	Record inventory.Record
	// Source is SourceInventory until a rotation commits a password, then
	// SourceRotation, until Apply with Force (or an inventory edited to
	// the current password) gives the password back to the inventory.
	Source string
	// Current is the current password with when and how it was set.
	Current Version
	// InventoryPassword is the inventory's password at the last apply that
	// took it, to tell an edit of the inventory from an unchanged one. It
	// is not updated while an edited inventory password is refused in
	// favour of a rotated one (ApplyReport.KeptRotated).
	InventoryPassword string
	// History holds the previous passwords, newest first: at most
	// Options.HistoryLimit of them, plus the newest
	// Options.UncommittedInRecord SourceUncommitted ones (older ones are
	// archived, never dropped: each may be the only copy of what a target
	// holds).
	History []Version
	// Pending is the new password of the rotation running for this
	// record, stored before any task that carries it is published
	// (write-ahead): SetPending. The rotation's end commits it or moves it
	// to History as SourceUncommitted; nil when no rotation is pending.
	Pending *Version
	// LastRotation summarises the last rotation; nil before the first.
	LastRotation *Rotation
	// InInventory is false for a record applied before but absent from the
	// last applied inventory. Such a record is kept: it may hold the only
	// copy of a rotated password.
	InInventory bool
	// UpdatedAt is the time of the last change.
	UpdatedAt time.Time
}

// Password returns the current password, "" when there is none.
func (e Entry) Password() string { return e.Current.Password }

// Store is the record store: a KV bucket whose values are sealed with the
// vault key. Its methods are safe for concurrent use, also by several
// processes sharing the bucket.
type Store struct {
	kv   jetstream.KeyValue
	key  Key
	opts Options
}

// Open creates the bucket (updating its configuration, with reads from the
// stream leader: package consistent) and binds it. On first use it
// stores a sealed check value under "_check"; when the bucket already has
// one that key does not open, Open fails with an error wrapping ErrWrongKey
// that tells the user what to do.
func Open(ctx context.Context, js jetstream.JetStream, key Key, opts Options) (*Store, error) {
	opts = opts.withDefaults()
	if err := opts.validate(); err != nil {
		return nil, err
	}
	kv, err := consistent.KeyValue(ctx, js, jetstream.KeyValueConfig{
		Bucket:      opts.Bucket,
		Description: "postrotate record store: records and passwords, sealed with the vault key",
		History:     1,
		Storage:     opts.Storage,
		Replicas:    opts.Replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("open record store %s: %w", opts.Bucket, err)
	}
	s := &Store{kv: kv, key: key, opts: opts}
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// check stores the check value, or verifies the one stored.
func (s *Store) check(ctx context.Context) error {
	_, err := s.kv.Create(ctx, checkKey, s.key.Seal([]byte(checkValue), []byte(checkKey)))
	if err == nil {
		return nil
	}
	if !errors.Is(err, jetstream.ErrKeyExists) {
		return fmt.Errorf("open record store: store check value: %w", err)
	}
	e, err := s.kv.Get(ctx, checkKey)
	if err != nil {
		return fmt.Errorf("open record store: read check value: %w", err)
	}
	plain, err := s.key.Open(e.Value(), []byte(checkKey))
	if errors.Is(err, ErrWrongKey) || (err == nil && string(plain) != checkValue) {
		which := "the vault key"
		if s.opts.KeySource != "" {
			which = "the key in " + s.opts.KeySource
		}
		return fmt.Errorf("open record store: %w: %s is not the one this store was created with: restore the key you backed up, or start with an empty --data", ErrWrongKey, which)
	}
	if err != nil {
		return fmt.Errorf("open record store: %w", err)
	}
	return nil
}

// recordKey is the KV key of a record: "rec." and the uid encoded by
// messages.HostToken (letters, digits and '-' kept, any other byte as '_'
// and two hex digits), which is injective and valid in a KV key whatever
// the uid holds. The uid is thus readable in the bucket's files; titles,
// fields and passwords are not.
func recordKey(uid string) string { return recordPrefix + messages.HostToken(uid) }

// load reads the entry under key and its revision.
func (s *Store) load(ctx context.Context, key string) (Entry, uint64, error) {
	kve, err := s.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return Entry{}, 0, ErrNotFound
	}
	if err != nil {
		return Entry{}, 0, fmt.Errorf("read %s: %w", key, err)
	}
	plain, err := s.key.Open(kve.Value(), []byte(key))
	if err != nil {
		return Entry{}, 0, fmt.Errorf("read %s: %w", key, err)
	}
	e, err := decodeEntry(plain)
	if err != nil {
		return Entry{}, 0, fmt.Errorf("decode %s: %w", key, err)
	}
	return e, kve.Revision(), nil
}

// seal encodes and seals e for key.
func (s *Store) seal(key string, e Entry) ([]byte, error) {
	data, err := encodeEntry(e)
	if err != nil {
		return nil, err
	}
	return s.key.Seal(data, []byte(key)), nil
}

// errNoChange is returned by a modify function that has nothing to write.
var errNoChange = errors.New("no change")

// modify applies fn to the entry of uid and writes the result if the entry
// did not change meanwhile, retrying on a revision conflict. fn gets a copy
// it may change; it returns errNoChange to write nothing.
func (s *Store) modify(ctx context.Context, uid string, fn func(e *Entry) error) error {
	key := recordKey(uid)
	for range maxAttempts {
		e, rev, err := s.load(ctx, key)
		if err != nil {
			return err
		}
		if err := fn(&e); errors.Is(err, errNoChange) {
			return nil
		} else if err != nil {
			return err
		}
		data, err := s.seal(key, e)
		if err != nil {
			return err
		}
		_, err = s.kv.Update(ctx, key, data, rev)
		if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			continue
		}
		if err != nil {
			return fmt.Errorf("write record %s: %w", uid, err)
		}
		return nil
	}
	return fmt.Errorf("write record %s: still conflicting after %d attempts", uid, maxAttempts)
}

// Get returns the entry of uid, or an error wrapping ErrNotFound.
func (s *Store) Get(ctx context.Context, uid string) (Entry, error) {
	if uid == "" {
		return Entry{}, fmt.Errorf("record %q: %w", uid, ErrNotFound)
	}
	e, _, err := s.load(ctx, recordKey(uid))
	if errors.Is(err, ErrNotFound) {
		return Entry{}, fmt.Errorf("record %s: %w", uid, ErrNotFound)
	}
	return e, err
}

// List returns every entry, sorted by uid.
func (s *Store) List(ctx context.Context) ([]Entry, error) {
	keys, err := s.keys(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]Entry, 0, len(keys))
	for _, k := range keys {
		e, _, err := s.load(ctx, k)
		if errors.Is(err, ErrNotFound) {
			continue // deleted meanwhile
		}
		if err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	slices.SortFunc(out, func(a, b Entry) int { return strings.Compare(a.Record.UID, b.Record.UID) })
	return out, nil
}

// keys returns the KV keys of the records.
func (s *Store) keys(ctx context.Context) ([]string, error) {
	lister, err := s.kv.ListKeysFiltered(ctx, recordPrefix+">")
	if err != nil {
		return nil, fmt.Errorf("list records: %w", err)
	}
	var keys []string
	// Drain the lister: its goroutine ends when the listing does.
	for k := range lister.Keys() {
		keys = append(keys, k)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("list records: %w", err)
	}
	slices.Sort(keys)
	return slices.Compact(keys), nil
}

// Commit makes newPassword the current password of uid after a rotation
// took effect: the previous one goes to History (trimmed to HistoryLimit)
// and Source becomes SourceRotation. Committing again the password a
// rotation already committed changes nothing, so a retried commit does not
// fill the history.
func (s *Store) Commit(ctx context.Context, uid, newPassword, rotationID string) error {
	if newPassword == "" {
		return fmt.Errorf("commit record %s: empty password", uid)
	}
	now := s.now()
	err := s.modify(ctx, uid, func(e *Entry) error {
		pending := e.Pending != nil && e.Pending.RotationID == rotationID
		if pending {
			e.Pending = nil
		}
		if e.Source == SourceRotation && e.Current.Password == newPassword && e.Current.RotationID == rotationID {
			if !pending {
				return errNoChange
			}
			e.UpdatedAt = now
			return nil
		}
		s.setCurrent(e, Version{Password: newPassword, SetAt: now, RotationID: rotationID, Source: SourceRotation})
		e.Source = SourceRotation
		e.UpdatedAt = now
		return nil
	})
	if errors.Is(err, ErrNotFound) {
		return fmt.Errorf("commit record %s: %w", uid, ErrNotFound)
	}
	return err
}

// SetLastRotation records the summary of the last rotation of uid.
func (s *Store) SetLastRotation(ctx context.Context, uid string, r Rotation) error {
	now := s.now()
	err := s.modify(ctx, uid, func(e *Entry) error {
		e.LastRotation = &r
		e.UpdatedAt = now
		return nil
	})
	if errors.Is(err, ErrNotFound) {
		return fmt.Errorf("set last rotation of record %s: %w", uid, ErrNotFound)
	}
	return err
}

// setCurrent makes v the current password of e: the previous one, unless
// empty, goes to the front of the history, trimmed to HistoryLimit, and
// the record's password field takes v.Password.
func (s *Store) setCurrent(e *Entry, v Version) {
	if e.Current.Password != "" {
		e.History = s.trim(append([]Version{e.Current}, e.History...))
	}
	e.Current = v
	setPassword(&e.Record, v.Password)
}

// trim keeps the newest HistoryLimit previous passwords of h (newest
// first) and every uncommitted one: a password that may be on a target is
// never dropped.
func (s *Store) trim(h []Version) []Version {
	out := make([]Version, 0, min(len(h), s.opts.HistoryLimit+1))
	kept := 0
	for _, v := range h {
		switch {
		case v.Source == SourceUncommitted:
			out = append(out, v)
		case kept < s.opts.HistoryLimit:
			out = append(out, v)
			kept++
		}
	}
	return out
}

// now returns the time in UTC, without monotonic reading, as stored.
func (s *Store) now() time.Time { return s.opts.Now().UTC().Round(0) }
