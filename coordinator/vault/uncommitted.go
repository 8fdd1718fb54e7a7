package vault

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"
)

// SourceUncommitted marks a history entry that is not a previous password
// but one a rotation may have set on a target without taking effect (a
// script that failed, was in doubt or never reported; a failed built-in
// rotation without rollback; a failed rollback): kept so that a person can
// find it. It is never trimmed from the history: beyond
// Options.UncommittedInRecord it moves to an archive entry (Archived).
const SourceUncommitted = "uncommitted"

// SourcePending marks Entry.Pending: the new password of a rotation that
// has not ended yet.
const SourcePending = "pending"

// SetPending stores password as the pending credential of rotation
// rotationID on uid, before anything that carries it leaves the
// coordinator (write-ahead): whatever happens next, the password a target
// may be given is in the store. A pending password of another rotation
// still there (a rotation that ended without settling it) moves to the
// history as uncommitted: it is never dropped. Setting it again for the
// same rotation changes nothing.
func (s *Store) SetPending(ctx context.Context, uid, password, rotationID string) error {
	if password == "" {
		return fmt.Errorf("store pending password of record %s: empty password", uid)
	}
	now := s.now()
	over := false
	err := s.modify(ctx, uid, func(e *Entry) error {
		if p := e.Pending; p != nil && p.RotationID == rotationID {
			if p.Password != password {
				return fmt.Errorf("store pending password of record %s: rotation %s has another pending password", uid, rotationID)
			}
			return errNoChange
		}
		if settled(*e, rotationID) {
			return errNoChange // resumed after its end was stored
		}
		over = s.settle(e, now)
		e.Pending = &Version{Password: password, SetAt: now, RotationID: rotationID, Source: SourcePending}
		e.UpdatedAt = now
		return nil
	})
	if errors.Is(err, ErrNotFound) {
		return fmt.Errorf("store pending password of record %s: %w", uid, ErrNotFound)
	}
	if err != nil || !over {
		return err
	}
	return s.archiveOverflow(ctx, uid)
}

// settled reports whether rotation rotationID's password was committed or
// kept as uncommitted already.
func settled(e Entry, rotationID string) bool {
	if e.Current.RotationID == rotationID {
		return true
	}
	for _, h := range e.History {
		if h.RotationID == rotationID {
			return true
		}
	}
	return false
}

// settle moves e's pending password, if any, to the front of the history
// as uncommitted. It reports whether the record now holds more uncommitted
// passwords than it keeps (archiveOverflow).
func (s *Store) settle(e *Entry, now time.Time) (over bool) {
	p := e.Pending
	if p == nil {
		return false
	}
	e.Pending = nil
	return s.keep(e, p.Password, p.RotationID, now)
}

// keep puts password at the front of e's history as rotation rotationID's
// uncommitted password, unless it is there already. It reports whether the
// record now holds more uncommitted passwords than it keeps
// (archiveOverflow).
func (s *Store) keep(e *Entry, password, rotationID string, now time.Time) (over bool) {
	if !slices.ContainsFunc(e.History, func(h Version) bool { return h.Source == SourceUncommitted && h.RotationID == rotationID }) {
		e.History = s.trim(append([]Version{{Password: password, SetAt: now, RotationID: rotationID, Source: SourceUncommitted}}, e.History...))
	}
	return len(overflow(e.History, s.opts.UncommittedInRecord)) > 0
}

// KeepUncommitted keeps password, which rotation rotationID may have set on
// a target of uid without committing it, at the front of the history (the
// rotation's pending password moves there). The current password does not
// change. Keeping it again for the same rotation changes nothing. An empty
// password keeps only the rotation's pending password, if any.
func (s *Store) KeepUncommitted(ctx context.Context, uid, password, rotationID string) error {
	now := s.now()
	over := false
	err := s.modify(ctx, uid, func(e *Entry) error {
		switch p := e.Pending; {
		case p != nil && p.RotationID == rotationID:
			over = s.settle(e, now)
		case password == "" || settled(*e, rotationID):
			return errNoChange
		default:
			over = s.keep(e, password, rotationID, now)
		}
		e.UpdatedAt = now
		return nil
	})
	if errors.Is(err, ErrNotFound) {
		return fmt.Errorf("keep password of record %s: %w", uid, ErrNotFound)
	}
	if err != nil || !over {
		return err
	}
	return s.archiveOverflow(ctx, uid)
}

// DropPending removes the pending password of rotation rotationID from
// uid: for a rotation that ended without any task carrying it having been
// published, so that no target can hold it. Nothing else changes; a
// pending password of another rotation stays.
func (s *Store) DropPending(ctx context.Context, uid, rotationID string) error {
	now := s.now()
	err := s.modify(ctx, uid, func(e *Entry) error {
		if p := e.Pending; p == nil || p.RotationID != rotationID {
			return errNoChange
		}
		e.Pending = nil
		e.UpdatedAt = now
		return nil
	})
	if errors.Is(err, ErrNotFound) {
		return fmt.Errorf("drop pending password of record %s: %w", uid, ErrNotFound)
	}
	return err
}
