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

	"github.com/nats-io/nats.go/jetstream"

	"github.com/postrotate/postrotate/coordinator/inventory"
	"github.com/postrotate/postrotate/coordinator/rotation"
	"github.com/postrotate/postrotate/coordinator/runs"
	"github.com/postrotate/postrotate/coordinator/server"
	"github.com/postrotate/postrotate/coordinator/vault"
	"github.com/postrotate/postrotate/messages"
	"github.com/postrotate/postrotate/worker/workertest"
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

// rotateAndWait rotates user through s's API and waits for the rotation
// to finish.
func rotateAndWait(t *testing.T, s *App, user string) rotation.View {
	t.Helper()
	var run runs.Run
	if code := do(t, s.Handler(), "POST", "/v1/rotations", `{"user":"`+user+`"}`, &run); code != http.StatusAccepted {
		t.Fatalf("POST: %d", code)
	}
	return waitFinished(t, s.js, s.Handler(), run.ID)
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
	start := func(k vault.Key) (*App, error) { return startOnStore(t, js, inv, k) }
	s, err := start(key)
	if err != nil {
		t.Fatal(err)
	}
	startWorkers(t, s, js, "gw", "m1")
	h := s.Handler()

	first, second := rotateAndWait(t, s, "alice"), rotateAndWait(t, s, "alice")
	got := checkChained(t, log, first, second)
	checkRecordHidden(t, h)
	checkRecordRevealed(t, h, got, first, second)
	var list []server.RecordSummary
	if code := do(t, h, "GET", "/v1/records", "", &list); code != http.StatusOK || len(list) != 7 {
		t.Fatalf("GET records: %d %+v", code, list)
	}
	waitBobScheduledDaily(t, js, h)

	// The next coordinator, same key: the inventory is applied again but
	// the rotated password stays.
	if err := s.Stop(t.Context()); err != nil {
		t.Fatal(err)
	}
	s2, err := start(key)
	if err != nil {
		t.Fatal(err)
	}
	third := rotateAndWait(t, s2, "alice")
	if got := rotations(t, log); third.State != runs.StateCompleted || len(got) != 3 || got[2][0] != got[1][1] {
		t.Fatalf("third rotation %+v, passwords %q", third, got)
	}
	_ = s2.Stop(t.Context())

	if _, err := start(vault.NewKey()); !errors.Is(err, vault.ErrWrongKey) {
		t.Fatalf("start with another key: %v, want ErrWrongKey", err)
	}
}

// startOnStore starts a coordinator on js with inv and the record store
// key k; the test's cleanup stops it.
func startOnStore(t *testing.T, js jetstream.JetStream, inv *inventory.Inventory, k vault.Key) (*App, error) {
	t.Helper()
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

// checkChained checks that both rotations committed and that the second
// script was given the first's new password as its old one; it returns
// the "old new" pairs the script wrote.
func checkChained(t *testing.T, log string, first, second rotation.View) [][2]string {
	t.Helper()
	for _, v := range []rotation.View{first, second} {
		if v.State != runs.StateCompleted || v.Effect != string(rotation.EffectCommitted) {
			t.Fatalf("rotation %s: %+v", v.ID, v)
		}
	}
	got := rotations(t, log)
	if len(got) != 2 || got[0][0] != "a-old" || got[1][0] != got[0][1] || got[1][1] == got[0][1] {
		t.Fatalf("passwords given to the scripts (old new): %q", got)
	}
	return got
}

// checkRecordHidden checks that alice's record, read without reveal, hides
// her password everywhere.
func checkRecordHidden(t *testing.T, h http.Handler) {
	t.Helper()
	var hiddenView server.RecordView
	if code := do(t, h, "GET", "/v1/records/alice", "", &hiddenView); code != http.StatusOK || hiddenView.Password != server.Hidden || hiddenView.Revealed {
		t.Fatalf("GET record: %d %+v", code, hiddenView)
	}
	for _, f := range hiddenView.Fields {
		if f.Type == "password" && f.Value != server.Hidden {
			t.Errorf("password field shown without reveal: %+v", f)
		}
	}
}

// checkRecordRevealed checks that alice's record, revealed, holds the
// second rotation's password, the previous ones in its history, and the
// second rotation as the last.
func checkRecordRevealed(t *testing.T, h http.Handler, got [][2]string, first, second rotation.View) {
	t.Helper()
	var revealed server.RecordView
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
}

// waitBobScheduledDaily waits for the scheduler to store bob's schedule
// (its state under "user.<token>" in the schedules bucket, see package
// schedule), then checks that his record shows it: he is rotated every
// 24h, so his next rotation is about a day away.
func waitBobScheduledDaily(t *testing.T, js jetstream.JetStream, h http.Handler) {
	t.Helper()
	kv, err := js.KeyValue(t.Context(), messages.Subjects{}.SchedulesBucket())
	if err != nil {
		t.Fatalf("the schedules bucket: %v", err)
	}
	workertest.WatchKey(t, kv, "user."+messages.HostToken("bob"), 10*time.Second, func(e jetstream.KeyValueEntry) bool {
		return e.Operation() == jetstream.KeyValuePut
	})
	var bob server.RecordView
	do(t, h, "GET", "/v1/records/bob", "", &bob)
	if next := time.Until(bob.NextRotation); bob.Schedule != "every 24h0m0s" || next <= 23*time.Hour || next > 24*time.Hour {
		t.Fatalf("bob's schedule: %q, next rotation %v", bob.Schedule, bob.NextRotation)
	}
}
