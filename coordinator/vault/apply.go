package vault

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/postrotate/postrotate/coordinator/inventory"
)

// ApplyOptions change how Apply treats passwords.
type ApplyOptions struct {
	// Force takes the inventory's password over one a rotation committed,
	// for the records whose inventory password was edited since the last
	// apply that took it (e.g. after the password was reset by hand). An
	// inventory password left unchanged is never forced back.
	Force bool
}

// ApplyReport lists, by uid and sorted, what Apply did. Every record of the
// inventory is in exactly one of Added, Updated and Unchanged; KeptRotated
// and Forced single out some of them.
type ApplyReport struct {
	// Added records were not in the store.
	Added []string
	// Updated records changed: fields, scripts, settings, password, or
	// presence in the inventory.
	Updated []string
	// Unchanged records were stored as they are.
	Unchanged []string
	// KeptRotated records have an inventory password edited since the last
	// apply, which was not taken because a rotation committed the current
	// password (apply with Force to take it).
	KeptRotated []string
	// Forced records had their rotated password replaced by the edited
	// inventory's (Force).
	Forced []string
	// Missing records are stored but absent from the inventory. They are
	// kept, with InInventory false.
	Missing []string
}

// Apply loads inv into the store, record by record.
//
// A new record is added with the inventory's password. A stored record
// takes the inventory's fields, scripts and settings, and for its password:
//   - when its Source is SourceInventory, the inventory's password (the
//     previous one goes to History);
//   - when its Source is SourceRotation, the rotated password is kept. If the
//     inventory's password was edited since the last apply (it differs from
//     InventoryPassword), the record is listed in KeptRotated, or with Force
//     its password is replaced by the inventory's (the rotated one goes to
//     History, Source becomes SourceInventory) and it is listed in Forced.
//     An inventory edited to the rotated password itself gives the password
//     back to the inventory (Source SourceInventory).
//
// Stored records absent from inv are marked InInventory false and listed in
// Missing; they are never deleted. Each record is written with its KV
// revision, and rewritten on a conflict, so that concurrent applies and
// commits never lose a write. An error stops Apply: the records before it
// are applied.
func (s *Store) Apply(ctx context.Context, inv *inventory.Inventory, opts ApplyOptions) (ApplyReport, error) {
	var rep ApplyReport
	present := make(map[string]bool, len(inv.Records))
	for i := range inv.Records {
		r := &inv.Records[i]
		if r.UID == "" {
			return rep, fmt.Errorf("apply records[%d]: empty uid", i)
		}
		present[recordKey(r.UID)] = true
		if err := s.applyRecord(ctx, r, opts, &rep); err != nil {
			return rep, err
		}
	}
	keys, err := s.keys(ctx)
	if err != nil {
		return rep, fmt.Errorf("apply: %w", err)
	}
	for _, key := range keys {
		if present[key] {
			continue
		}
		uid, err := s.markMissing(ctx, key)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return rep, fmt.Errorf("apply: %w", err)
		}
		rep.Missing = append(rep.Missing, uid)
	}
	for _, l := range []*[]string{&rep.Added, &rep.Updated, &rep.Unchanged, &rep.KeptRotated, &rep.Forced, &rep.Missing} {
		slices.Sort(*l)
	}
	return rep, nil
}

// outcome of applying one record.
type outcome int

const (
	outcomeUnchanged outcome = iota
	outcomeUpdated
	outcomeKeptRotated
	outcomeForced
)

func (s *Store) applyRecord(ctx context.Context, r *inventory.Record, opts ApplyOptions, rep *ApplyReport) error {
	key := recordKey(r.UID)
	for range maxAttempts {
		now := s.now()
		old, rev, err := s.load(ctx, key)
		if errors.Is(err, ErrNotFound) {
			data, err := s.seal(key, newEntry(r, now))
			if err != nil {
				return fmt.Errorf("apply: %w", err)
			}
			_, err = s.kv.Create(ctx, key, data)
			if errors.Is(err, jetstream.ErrKeyExists) {
				continue // created meanwhile
			}
			if err != nil {
				return fmt.Errorf("apply record %s: %w", r.UID, err)
			}
			rep.Added = append(rep.Added, r.UID)
			return nil
		}
		if err != nil {
			return fmt.Errorf("apply: %w", err)
		}
		next, out := s.merge(old, r, opts.Force, now)
		changed, err := differ(old, next)
		if err != nil {
			return fmt.Errorf("apply: %w", err)
		}
		if changed {
			data, err := s.seal(key, next)
			if err != nil {
				return fmt.Errorf("apply: %w", err)
			}
			_, err = s.kv.Update(ctx, key, data, rev)
			if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
				continue
			}
			if err != nil {
				return fmt.Errorf("apply record %s: %w", r.UID, err)
			}
		}
		if changed {
			rep.Updated = append(rep.Updated, r.UID)
		} else {
			rep.Unchanged = append(rep.Unchanged, r.UID)
		}
		switch out {
		case outcomeKeptRotated:
			rep.KeptRotated = append(rep.KeptRotated, r.UID)
		case outcomeForced:
			rep.Forced = append(rep.Forced, r.UID)
		}
		return nil
	}
	return fmt.Errorf("apply record %s: still conflicting after %d attempts", r.UID, maxAttempts)
}

// newEntry is the entry of a record added from the inventory.
func newEntry(r *inventory.Record, now time.Time) Entry {
	pw := r.Password()
	return Entry{
		Record:            cloneRecord(r),
		Source:            SourceInventory,
		Current:           Version{Password: pw, SetAt: now, Source: SourceInventory},
		InventoryPassword: pw,
		InInventory:       true,
		UpdatedAt:         now,
	}
}

// merge returns old updated from the inventory's record r.
func (s *Store) merge(old Entry, r *inventory.Record, force bool, now time.Time) (Entry, outcome) {
	next := old
	next.Record = cloneRecord(r)
	next.InInventory = true
	invPw := r.Password()
	edited := invPw != old.InventoryPassword
	out := outcomeUnchanged
	switch {
	case old.Source != SourceRotation:
		if invPw != old.Current.Password {
			s.setCurrent(&next, Version{Password: invPw, SetAt: now, Source: SourceInventory})
		}
		next.InventoryPassword = invPw
	case !edited:
		// Keep the rotated password.
	case invPw == old.Current.Password:
		// The inventory was edited to the rotated password: it governs
		// the password again.
		next.Source = SourceInventory
		next.InventoryPassword = invPw
	case force:
		s.setCurrent(&next, Version{Password: invPw, SetAt: now, Source: SourceForced})
		next.Source = SourceInventory
		next.InventoryPassword = invPw
		out = outcomeForced
	default:
		out = outcomeKeptRotated
	}
	// The record carries the current password, whichever it is.
	setPassword(&next.Record, next.Current.Password)
	next.UpdatedAt = now
	return next, out
}

// differ reports whether a and b differ in anything but UpdatedAt.
func differ(a, b Entry) (bool, error) {
	a.UpdatedAt, b.UpdatedAt = time.Time{}, time.Time{}
	ja, err := encodeEntry(a)
	if err != nil {
		return false, err
	}
	jb, err := encodeEntry(b)
	if err != nil {
		return false, err
	}
	return !bytes.Equal(ja, jb), nil
}

// markMissing sets InInventory false on the entry under key and returns its
// uid.
func (s *Store) markMissing(ctx context.Context, key string) (string, error) {
	for range maxAttempts {
		e, rev, err := s.load(ctx, key)
		if err != nil {
			return "", err
		}
		if !e.InInventory {
			return e.Record.UID, nil
		}
		e.InInventory = false
		e.UpdatedAt = s.now()
		data, err := s.seal(key, e)
		if err != nil {
			return "", err
		}
		_, err = s.kv.Update(ctx, key, data, rev)
		if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			continue
		}
		if err != nil {
			return "", fmt.Errorf("write record %s: %w", e.Record.UID, err)
		}
		return e.Record.UID, nil
	}
	return "", fmt.Errorf("write %s: still conflicting after %d attempts", key, maxAttempts)
}

// Overlay returns a copy of inv in which every record whose password a
// rotation committed (Source SourceRotation) holds the stored current
// password in its first password field, so that plans built from it give
// scripts the right old password and records. The copy shares nothing
// mutable with inv. Records not in the store are copied as they are.
func (s *Store) Overlay(ctx context.Context, inv *inventory.Inventory) (*inventory.Inventory, error) {
	out := &inventory.Inventory{Version: inv.Version, Dir: inv.Dir}
	if inv.Records != nil {
		out.Records = make([]inventory.Record, len(inv.Records))
	}
	for i := range inv.Records {
		r := &inv.Records[i]
		out.Records[i] = cloneRecord(r)
		if r.UID == "" {
			continue
		}
		e, _, err := s.load(ctx, recordKey(r.UID))
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("overlay: %w", err)
		}
		if e.Source == SourceRotation {
			setPassword(&out.Records[i], e.Current.Password)
		}
	}
	return out, nil
}

// setPassword makes pw the first value of r's first password field, adding
// a password field when r has none. A record whose password is already pw
// is left as it is. r.Fields is copied before it is changed.
func setPassword(r *inventory.Record, pw string) {
	if r.Password() == pw {
		return
	}
	r.Fields = slices.Clone(r.Fields)
	for i := range r.Fields {
		f := &r.Fields[i]
		if f.Type != "password" {
			continue
		}
		if l, ok := f.Value.([]any); ok && len(l) > 0 {
			l = slices.Clone(l)
			l[0] = pw
			f.Value = l
		} else {
			f.Value = pw
		}
		return
	}
	r.Fields = append(r.Fields, inventory.Field{Type: "password", Value: pw})
}

// cloneRecord returns a copy of r that shares nothing mutable with it.
func cloneRecord(r *inventory.Record) inventory.Record {
	c := *r
	if r.Connection != nil {
		conn := *r.Connection
		conn.KnownHostsData = slices.Clone(conn.KnownHostsData)
		conn.CACertData = slices.Clone(conn.CACertData)
		c.Connection = &conn
	}
	if r.Fields != nil {
		c.Fields = make([]inventory.Field, len(r.Fields))
		for i, f := range r.Fields {
			f.Value = cloneValue(f.Value)
			c.Fields[i] = f
		}
	}
	if r.Scripts != nil {
		c.Scripts = make([]inventory.Script, len(r.Scripts))
		for i, sc := range r.Scripts {
			sc.Records = slices.Clone(sc.Records)
			sc.Content = slices.Clone(sc.Content)
			if sc.HTTP != nil {
				h := *sc.HTTP
				h.Headers = maps.Clone(h.Headers)
				h.ExpectStatus = slices.Clone(h.ExpectStatus)
				sc.HTTP = &h
			}
			c.Scripts[i] = sc
		}
	}
	if r.Rotation != nil {
		rot := *r.Rotation
		c.Rotation = &rot
	}
	return c
}

func cloneValue(v any) any {
	switch v := v.(type) {
	case []any:
		if v == nil {
			return v
		}
		out := make([]any, len(v))
		for i, item := range v {
			out[i] = cloneValue(item)
		}
		return out
	case map[string]any:
		if v == nil {
			return v
		}
		out := make(map[string]any, len(v))
		for k, item := range v {
			out[k] = cloneValue(item)
		}
		return out
	default:
		return v
	}
}
