package app

import (
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/postrotate/postrotate/coordinator/rotation"
	"github.com/postrotate/postrotate/coordinator/runs"
	"github.com/postrotate/postrotate/coordinator/server"
	"github.com/postrotate/postrotate/coordinator/vault"
)

// chainScript appends the passwords it was given to a file, as
// "old new" lines: what the test checks rotation after rotation.
const chainScript = `import sys, json, base64
p = json.loads(base64.b64decode(sys.stdin.readline()))
with open(LOG, "a") as f:
    f.write(p["oldPassword"] + " " + p["newPassword"] + "\n")
print("ok")
`

// rotations reads the "old new" lines chain.py wrote.
func rotations(t *testing.T, log string) [][2]string {
	t.Helper()
	data, err := os.ReadFile(log)
	if err != nil {
		t.Fatal(err)
	}
	var out [][2]string
	for _, l := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		old, nw, _ := strings.Cut(l, " ")
		out = append(out, [2]string{old, nw})
	}
	return out
}

func rotateAndWait(t *testing.T, h http.Handler, user string) rotation.View {
	t.Helper()
	var run runs.Run
	if code := do(t, h, "POST", "/v1/rotations", `{"user":"`+user+`"}`, &run); code != http.StatusAccepted {
		t.Fatalf("POST: %d", code)
	}
	return waitFinished(t, h, run.ID)
}

// Two consecutive rotations of one user: the second's oldPassword is the
// first's newPassword, the record store has the new one (revealed only on
// request) and the previous ones in its history; a coordinator started
// again on the same store goes on from there, and one with another key is
// refused.
func TestConsecutiveRotationsChainPasswords(t *testing.T) {
	t.Parallel()
	log := filepath.Join(t.TempDir(), "passwords.log")
	script := strings.Replace(chainScript, "LOG", `"`+log+`"`, 1)
	inv := inventoryFor(t, map[string]string{"chain.py": script}, "[{file: chain.py, command: /usr/bin/python3}]", "[]")
	js, _ := startBroker(t)
	key := vault.NewKey()
	start := func(k vault.Key) (*App, error) {
		s, err := New(js, Options{Inventory: inv, Key: &k})
		if err != nil {
			return nil, err
		}
		if err := s.Start(t.Context()); err != nil {
			return nil, err
		}
		t.Cleanup(func() { _ = s.Stop(context.Background()) })
		return s, nil
	}
	s, err := start(key)
	if err != nil {
		t.Fatal(err)
	}
	startWorkers(t, s, js, "gw", "m1")
	h := s.Handler()

	first, second := rotateAndWait(t, h, "alice"), rotateAndWait(t, h, "alice")
	for _, v := range []rotation.View{first, second} {
		if v.State != runs.StateCompleted || v.Effect != string(rotation.EffectCommitted) {
			t.Fatalf("rotation %s: %+v", v.ID, v)
		}
	}
	got := rotations(t, log)
	if len(got) != 2 || got[0][0] != "a-old" || got[1][0] != got[0][1] || got[1][1] == got[0][1] {
		t.Fatalf("passwords given to the scripts (old new): %q", got)
	}

	var hiddenView, revealed server.RecordView
	if code := do(t, h, "GET", "/v1/records/alice", "", &hiddenView); code != http.StatusOK || hiddenView.Password != server.Hidden || hiddenView.Revealed {
		t.Fatalf("GET record: %d %+v", code, hiddenView)
	}
	for _, f := range hiddenView.Fields {
		if f.Type == "password" && f.Value != server.Hidden {
			t.Errorf("password field shown without reveal: %+v", f)
		}
	}
	if code := do(t, h, "GET", "/v1/records/alice?reveal=true", "", &revealed); code != http.StatusOK {
		t.Fatalf("GET record reveal: %d", code)
	}
	if revealed.Password != got[1][1] || revealed.Source != vault.SourceRotation || len(revealed.History) != 2 ||
		revealed.History[0].Password != got[0][1] || revealed.History[0].RotationID != first.ID || revealed.History[1].Password != "a-old" {
		t.Fatalf("revealed record: %+v", revealed)
	}
	if revealed.LastRotation == nil || revealed.LastRotation.ID != second.ID {
		t.Fatalf("last rotation: %+v", revealed.LastRotation)
	}
	var list []server.RecordSummary
	if code := do(t, h, "GET", "/v1/records", "", &list); code != http.StatusOK || len(list) != 7 {
		t.Fatalf("GET records: %d %+v", code, list)
	}
	// bob is rotated every 24h: his next rotation is about a day away.
	deadline := time.Now().Add(10 * time.Second)
	for {
		var bob server.RecordView
		do(t, h, "GET", "/v1/records/bob", "", &bob)
		if next := time.Until(bob.NextRotation); bob.Schedule == "every 24h0m0s" && next > 23*time.Hour && next <= 24*time.Hour {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("bob's schedule: %q, next rotation %v", bob.Schedule, bob.NextRotation)
		}
		time.Sleep(50 * time.Millisecond)
	}

	// The next coordinator, same key: the inventory is applied again but
	// the rotated password stays.
	if err := s.Stop(t.Context()); err != nil {
		t.Fatal(err)
	}
	s2, err := start(key)
	if err != nil {
		t.Fatal(err)
	}
	third := rotateAndWait(t, s2.Handler(), "alice")
	if got := rotations(t, log); third.State != runs.StateCompleted || len(got) != 3 || got[2][0] != got[1][1] {
		t.Fatalf("third rotation %+v, passwords %q", third, got)
	}
	_ = s2.Stop(t.Context())

	if _, err := start(vault.NewKey()); !errors.Is(err, vault.ErrWrongKey) {
		t.Fatalf("start with another key: %v, want ErrWrongKey", err)
	}
}
