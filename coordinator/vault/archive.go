package vault

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/postrotate/postrotate/messages"
)

// archivePrefix starts the keys of archived uncommitted passwords:
// "arc.<record token>.<rotation token>", one sealed Version each.
const archivePrefix = "arc."

func archiveKey(uid, rotationID string) string {
	return archivePrefix + messages.HostToken(uid) + "." + messages.HostToken(rotationID)
}

// archiveOverflow moves the uncommitted passwords of uid beyond
// Options.UncommittedInRecord (the oldest) out of its record into archive
// entries: each is written before it leaves the record, so a failure
// between the two leaves it in both places, never in none.
func (s *Store) archiveOverflow(ctx context.Context, uid string) error {
	e, _, err := s.load(ctx, recordKey(uid))
	if err != nil {
		return err
	}
	over := overflow(e.History, s.opts.UncommittedInRecord)
	if len(over) == 0 {
		return nil
	}
	moved := map[string]bool{}
	for _, v := range over {
		key := archiveKey(uid, v.RotationID)
		data, err := json.Marshal(v)
		if err != nil {
			return fmt.Errorf("archive a password of record %s: %w", uid, err)
		}
		if _, err := s.kv.Put(ctx, key, s.key.Seal(data, []byte(key))); err != nil {
			return fmt.Errorf("archive a password of record %s: %w", uid, err)
		}
		moved[v.RotationID] = true
	}
	return s.modify(ctx, uid, func(e *Entry) error {
		n := len(e.History)
		e.History = slices.DeleteFunc(e.History, func(v Version) bool {
			return v.Source == SourceUncommitted && moved[v.RotationID]
		})
		if len(e.History) == n {
			return errNoChange
		}
		return nil
	})
}

// overflow returns the uncommitted versions of h (newest first) beyond the
// newest keep.
func overflow(h []Version, keep int) []Version {
	var out []Version
	n := 0
	for _, v := range h {
		if v.Source != SourceUncommitted {
			continue
		}
		if n++; n > keep {
			out = append(out, v)
		}
	}
	return out
}

// Archived returns the uncommitted passwords of uid moved out of its record
// (Options.UncommittedInRecord), newest first.
func (s *Store) Archived(ctx context.Context, uid string) ([]Version, error) {
	lister, err := s.kv.ListKeysFiltered(ctx, archivePrefix+messages.HostToken(uid)+".>")
	if err != nil {
		return nil, fmt.Errorf("list archived passwords of record %s: %w", uid, err)
	}
	var keys []string
	for k := range lister.Keys() {
		keys = append(keys, k)
	}
	var out []Version
	for _, key := range keys {
		kve, err := s.kv.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", key, err)
		}
		plain, err := s.key.Open(kve.Value(), []byte(key))
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", key, err)
		}
		var v Version
		if err := json.Unmarshal(plain, &v); err != nil {
			return nil, fmt.Errorf("decode %s: %w", key, err)
		}
		out = append(out, v)
	}
	slices.SortFunc(out, func(a, b Version) int {
		if c := b.SetAt.Compare(a.SetAt); c != 0 {
			return c
		}
		return strings.Compare(b.RotationID, a.RotationID)
	})
	return out, nil
}
