package vault

import (
	"context"
	"errors"
	"fmt"
)

// SourceUncommitted marks a history entry that is not a previous password
// but one a rotation may have set on the resource without taking effect (a
// failed built-in rotation without rollback, a failed rollback): kept so
// that a person can find it.
const SourceUncommitted = "uncommitted"

// KeepUncommitted keeps password, which rotation rotationID may have set on
// the resource of uid without committing it, at the front of the history.
// The current password does not change. Keeping it again for the same
// rotation changes nothing.
func (s *Store) KeepUncommitted(ctx context.Context, uid, password, rotationID string) error {
	if password == "" {
		return fmt.Errorf("keep password of record %s: empty password", uid)
	}
	now := s.now()
	err := s.modify(ctx, uid, func(e *Entry) error {
		for _, h := range e.History {
			if h.Source == SourceUncommitted && h.RotationID == rotationID {
				return errNoChange
			}
		}
		h := make([]Version, 0, len(e.History)+1)
		h = append(h, Version{Password: password, SetAt: now, RotationID: rotationID, Source: SourceUncommitted})
		h = append(h, e.History...)
		e.History = h[:min(len(h), max(s.opts.HistoryLimit, 1))]
		e.UpdatedAt = now
		return nil
	})
	if errors.Is(err, ErrNotFound) {
		return fmt.Errorf("keep password of record %s: %w", uid, ErrNotFound)
	}
	return err
}
