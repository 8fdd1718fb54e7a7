package vault

import (
	"errors"
	"fmt"
	"slices"
	"testing"
)

// The write-ahead credential: stored pending before anything carries it,
// then committed, kept as uncommitted or dropped, never lost on the way.
func TestPending(t *testing.T) {
	t.Parallel()
	s, _, _ := setup(t, Options{HistoryLimit: 2})
	apply(t, s, testInventory(t, "Inv-Pw-0", "Rotate"), ApplyOptions{})
	pendingCommitted(t, s)
	pendingKeptUncommitted(t, s)
	pendingDropped(t, s)
	pendingLeftBehind(t, s)
	if err := s.SetPending(t.Context(), "nope", "x", "rot-x"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("pending of unknown record: %v", err)
	}
}

// pending returns the pending password of uid.
func pending(t *testing.T, s *Store, uid string) *Version { return get(t, s, uid).Pending }

// pendingCommitted: a committed pending password becomes current.
func pendingCommitted(t *testing.T, s *Store) {
	t.Helper()
	ctx := t.Context()
	if err := s.SetPending(ctx, "svc-user", "Pw-1", "rot-1"); err != nil {
		t.Fatal(err)
	}
	if p := pending(t, s, "svc-user"); p == nil || p.Password != "Pw-1" || p.RotationID != "rot-1" || p.Source != SourcePending {
		t.Fatalf("pending = %+v", p)
	}
	if err := s.SetPending(ctx, "svc-user", "Pw-1", "rot-1"); err != nil {
		t.Fatalf("set again, same rotation: %v", err)
	}
	if err := s.SetPending(ctx, "svc-user", "Other", "rot-1"); err == nil {
		t.Fatal("another password for the same rotation was taken")
	}
	commit(t, s, "svc-user", "Pw-1", "rot-1")
	if e := get(t, s, "svc-user"); e.Pending != nil || e.Password() != "Pw-1" {
		t.Fatalf("after commit: pending %+v, password %q", e.Pending, e.Password())
	}
}

// pendingKeptUncommitted: not committed but sent, pending moves to the
// history as uncommitted; the current password stays.
func pendingKeptUncommitted(t *testing.T, s *Store) {
	t.Helper()
	ctx := t.Context()
	if err := s.SetPending(ctx, "svc-user", "Pw-2", "rot-2"); err != nil {
		t.Fatal(err)
	}
	if err := s.KeepUncommitted(ctx, "svc-user", "", "rot-2"); err != nil {
		t.Fatal(err)
	}
	e := get(t, s, "svc-user")
	if e.Pending != nil || e.Password() != "Pw-1" || len(e.History) == 0 || e.History[0].Password != "Pw-2" ||
		e.History[0].Source != SourceUncommitted || e.History[0].RotationID != "rot-2" {
		t.Fatalf("after keep: %+v", e)
	}
	// A resumed rotation whose end was stored does not become pending again.
	if err := s.SetPending(ctx, "svc-user", "Pw-2", "rot-2"); err != nil || pending(t, s, "svc-user") != nil {
		t.Fatalf("set pending of a settled rotation: %v, pending %+v", err, pending(t, s, "svc-user"))
	}
}

// pendingDropped: nothing sent, pending is dropped and nothing else
// changes.
func pendingDropped(t *testing.T, s *Store) {
	t.Helper()
	ctx := t.Context()
	if err := s.SetPending(ctx, "svc-user", "Pw-3", "rot-3"); err != nil {
		t.Fatal(err)
	}
	if err := s.DropPending(ctx, "svc-user", "rot-3"); err != nil {
		t.Fatal(err)
	}
	if e := get(t, s, "svc-user"); e.Pending != nil || slices.ContainsFunc(e.History, func(v Version) bool { return v.Password == "Pw-3" }) {
		t.Fatalf("after drop: %+v", e)
	}
}

// pendingLeftBehind: a pending password a rotation left behind is never
// dropped by the next one: it moves to the history as uncommitted.
func pendingLeftBehind(t *testing.T, s *Store) {
	t.Helper()
	ctx := t.Context()
	if err := s.SetPending(ctx, "svc-user", "Pw-4", "rot-4"); err != nil {
		t.Fatal(err)
	}
	if err := s.SetPending(ctx, "svc-user", "Pw-5", "rot-5"); err != nil {
		t.Fatal(err)
	}
	e := get(t, s, "svc-user")
	if e.Pending.Password != "Pw-5" || e.History[0].Password != "Pw-4" || e.History[0].Source != SourceUncommitted {
		t.Fatalf("pending replaced: %+v", e)
	}
	if err := s.DropPending(ctx, "svc-user", "rot-4"); err != nil || pending(t, s, "svc-user").Password != "Pw-5" {
		t.Fatalf("drop of another rotation touched the pending one: %v", err)
	}
}

// Uncommitted passwords are never trimmed from the history: each may be
// the only copy of what a target holds. Beyond UncommittedInRecord they
// move to archive entries, all still there.
func TestUncommittedNeverTrimmed(t *testing.T) {
	t.Parallel()
	s, _, _ := setup(t, Options{HistoryLimit: 2, UncommittedInRecord: 3})
	apply(t, s, testInventory(t, "Inv-Pw-0", "Rotate"), ApplyOptions{})
	ctx := t.Context()
	for i := 1; i <= 7; i++ {
		id := fmt.Sprintf("lost-%d", i)
		if err := s.SetPending(ctx, "svc-user", "Lost-"+id, id); err != nil {
			t.Fatal(err)
		}
		if err := s.KeepUncommitted(ctx, "svc-user", "", id); err != nil {
			t.Fatal(err)
		}
	}
	for i := 1; i <= 5; i++ {
		commit(t, s, "svc-user", fmt.Sprintf("Pw-%d", i), fmt.Sprintf("rot-%d", i))
	}
	e := get(t, s, "svc-user")
	var uncommitted, previous []string
	for _, v := range e.History {
		if v.Source == SourceUncommitted {
			uncommitted = append(uncommitted, v.Password)
		} else {
			previous = append(previous, v.Password)
		}
	}
	if !slices.Equal(uncommitted, []string{"Lost-lost-7", "Lost-lost-6", "Lost-lost-5"}) || !slices.Equal(previous, []string{"Pw-4", "Pw-3"}) {
		t.Fatalf("history: uncommitted %v, previous %v", uncommitted, previous)
	}
	archived, err := s.Archived(ctx, "svc-user")
	if err != nil {
		t.Fatal(err)
	}
	if got := passwords(archived); !slices.Equal(got, []string{"Lost-lost-4", "Lost-lost-3", "Lost-lost-2", "Lost-lost-1"}) {
		t.Fatalf("archived %v", got)
	}
	if other, err := s.Archived(ctx, "no-password"); err != nil || len(other) != 0 {
		t.Fatalf("another record's archive: %v %v", other, err)
	}
}
