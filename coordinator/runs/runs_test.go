package runs_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"go.uber.org/goleak"

	"github.com/postrotate/postrotate/coordinator/broker"
	"github.com/postrotate/postrotate/coordinator/broker/brokertest"
	"github.com/postrotate/postrotate/coordinator/runs"
	"github.com/postrotate/postrotate/messages"
	"github.com/postrotate/postrotate/messages/layout"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// openStore returns a runs store over a fresh broker, and the test's context.
func openStore(t *testing.T) (*runs.Store, context.Context) {
	t.Helper()
	js, _ := brokertest.JetStream(t, broker.Options{})
	ctx := t.Context()
	layout := layout.Layout{Subjects: messages.Subjects{}}
	if err := layout.Setup(ctx, js); err != nil {
		t.Fatal(err)
	}
	s, err := runs.Open(ctx, js, layout.Subjects, nil)
	if err != nil {
		t.Fatal(err)
	}
	return s, ctx
}

func TestLock(t *testing.T) {
	s, ctx := openStore(t)
	busy := func(id, holder string) {
		t.Helper()
		var be *runs.BusyError
		err := s.Lock(ctx, "alice", id)
		if !errors.As(err, &be) || !errors.Is(err, runs.ErrBusy) || be.RotationID != holder {
			t.Fatalf("Lock(alice, %s) = %v, want busy with %s", id, err, holder)
		}
	}

	if err := s.Lock(ctx, "alice", "r1"); err != nil {
		t.Fatal(err)
	}
	// r1 not stored yet (its coordinator is storing it), then running: busy.
	busy("r2", "r1")
	if err := s.Put(ctx, runs.Run{ID: "r1", User: "alice", State: runs.StateRunning}); err != nil {
		t.Fatal(err)
	}
	busy("r2", "r1")
	if err := s.Lock(ctx, "bob", "r3"); err != nil {
		t.Fatalf("another user: %v", err)
	}

	// r1 stored finished, its lock not released yet: r2 takes it over, and
	// r1's late Unlock leaves r2's lock alone.
	if err := s.Put(ctx, runs.Run{ID: "r1", User: "alice", State: runs.StateCompleted}); err != nil {
		t.Fatal(err)
	}
	if err := s.Lock(ctx, "alice", "r2"); err != nil {
		t.Fatalf("Lock after r1 finished: %v", err)
	}
	if err := s.Unlock(ctx, "alice", "r1"); err != nil {
		t.Fatal(err)
	}
	busy("r4", "r2")

	// Released: taken by the next one.
	if err := s.Unlock(ctx, "alice", "r2"); err != nil {
		t.Fatal(err)
	}
	if err := s.Lock(ctx, "alice", "r4"); err != nil {
		t.Fatalf("Lock after Unlock: %v", err)
	}
}

// A lock whose run is stored finished is taken over even while its holder
// releases it at the same moment (a client that saw the run finish asks
// for the next rotation at once).
func TestLockRacesUnlock(t *testing.T) {
	s, ctx := openStore(t)
	prev := "r0"
	if err := s.Lock(ctx, "alice", prev); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 200; i++ {
		if err := s.Put(ctx, runs.Run{ID: prev, User: "alice", State: runs.StateCompleted}); err != nil {
			t.Fatal(err)
		}
		next := fmt.Sprintf("r%d", i)
		unlocked := make(chan error, 1)
		go func() { unlocked <- s.Unlock(ctx, "alice", prev) }()
		if err := s.Lock(ctx, "alice", next); err != nil {
			t.Fatalf("round %d: Lock while %s is released: %v", i, prev, err)
		}
		if err := <-unlocked; err != nil {
			t.Fatal(err)
		}
		prev = next
	}
}
