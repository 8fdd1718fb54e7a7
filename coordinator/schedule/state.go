package schedule

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/postrotate/postrotate/messages"
)

// userState is the stored state of one scheduled user, under userKey.
type userState struct {
	SchemaVersion int    `json:"schema_version"`
	User          string `json:"user"`
	// Schedule is the String() of the schedule the state is for.
	Schedule string `json:"schedule"`
	// Since is when this schedule was first seen; the first slot is the
	// one after it.
	Since time.Time `json:"since"`
	// LastSlot is the last slot fired, zero before the first.
	LastSlot time.Time `json:"last_slot,omitzero"`
	// LastFiredAt is when LastSlot was fired.
	LastFiredAt time.Time `json:"last_fired_at,omitzero"`
}

// base is the time the next slot follows.
func (s userState) base() time.Time {
	if !s.LastSlot.IsZero() {
		return s.LastSlot
	}
	return s.Since
}

// stored is a userState with the revision it was read or written at.
type stored struct {
	state userState
	rev   uint64
}

const (
	leaderKey  = "leader"
	userPrefix = "user."
)

func userKey(user string) string { return userPrefix + messages.HostToken(user) }

// userOfKey returns the user a "user.<token>" key is for.
func userOfKey(key string) (string, bool) {
	token, ok := strings.CutPrefix(key, userPrefix)
	if !ok {
		return "", false
	}
	user, err := messages.ParseHostToken(token)
	return user, err == nil && user != ""
}

// decodeState decodes a stored state. A value that does not decode yields
// the zero state: its empty schedule never matches, so the user starts over.
func decodeState(value []byte) userState {
	var st userState
	if err := json.Unmarshal(value, &st); err != nil {
		return userState{}
	}
	return st
}

// isConflict reports whether err is a failed compare-and-set: the key was
// written since the revision given (or exists, for a create).
func isConflict(err error) bool {
	return errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyExists)
}

// writeState stores st for its user: a create when exists is false, else an
// update at revision rev. It returns the new revision.
func writeState(ctx context.Context, kv jetstream.KeyValue, st userState, rev uint64, exists bool) (uint64, error) {
	st.SchemaVersion = messages.SchemaVersion
	data, err := json.Marshal(st)
	if err != nil {
		return 0, fmt.Errorf("encode schedule state of %s: %w", st.User, err)
	}
	if exists {
		rev, err = kv.Update(ctx, userKey(st.User), data, rev)
	} else {
		rev, err = kv.Create(ctx, userKey(st.User), data)
	}
	if err != nil {
		return 0, fmt.Errorf("store schedule state of %s: %w", st.User, err)
	}
	return rev, nil
}
