package vault

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/postrotate/postrotate/coordinator/broker"
	"github.com/postrotate/postrotate/coordinator/inventory"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testInventory is a small deployment; user holds the password and scripts
// differ by their title.
func testInventory(t testing.TB, password, scriptTitle string) *inventory.Inventory {
	t.Helper()
	return parseInventory(t, fmt.Sprintf(`version: 1
records:
  - {uid: cfg, type: pamConfiguration, gateway: gw-1}
  - uid: web-01
    type: pamMachine
    worker: web-01
    fields:
      - {type: pamHostname, value: {hostName: web-01.internal, port: 22}}
  - uid: svc-user
    type: pamUser
    title: Service user
    fields:
      - {type: login, value: svc}
      - {type: password, value: %q}
    rotation: {type: scripts_only, resource: web-01}
    scripts:
      - {file: rotate.sh, title: %q}
  - uid: no-password
    type: pamUser
    fields:
      - {type: login, value: nopw}
    rotation: {type: scripts_only, resource: web-01}
`, password, scriptTitle))
}

// withoutUser is testInventory without svc-user.
func withoutUser(t testing.TB, inv *inventory.Inventory) *inventory.Inventory {
	t.Helper()
	out := *inv
	out.Records = slices.DeleteFunc(slices.Clone(inv.Records), func(r inventory.Record) bool { return r.UID == "svc-user" })
	return &out
}

// env is a running broker and what a test needs of it.
type env struct {
	dir    string
	broker *broker.Broker
	js     jetstream.JetStream
	stop   func()
}

// startBroker starts an embedded broker whose JetStream store is dir.
func startBroker(t *testing.T, dir string) *env {
	t.Helper()
	b, err := broker.Start(broker.Options{StoreDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	nc, err := b.Connect()
	if err != nil {
		b.Shutdown()
		t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		b.Shutdown()
		t.Fatal(err)
	}
	var once sync.Once
	e := &env{dir: dir, broker: b, js: js, stop: func() {
		once.Do(func() {
			nc.Close()
			b.Shutdown()
		})
	}}
	t.Cleanup(e.stop)
	return e
}

// setup returns a store over a fresh broker, with its key and environment.
func setup(t *testing.T, opts Options) (*Store, Key, *env) {
	t.Helper()
	e := startBroker(t, t.TempDir())
	key := NewKey()
	s, err := Open(t.Context(), e.js, key, opts)
	if err != nil {
		t.Fatal(err)
	}
	return s, key, e
}

func apply(t *testing.T, s *Store, inv *inventory.Inventory, opts ApplyOptions) ApplyReport {
	t.Helper()
	rep, err := s.Apply(t.Context(), inv, opts)
	if err != nil {
		t.Fatalf("apply: %v", err)
	}
	return rep
}

func get(t *testing.T, s *Store, uid string) Entry {
	t.Helper()
	e, err := s.Get(t.Context(), uid)
	if err != nil {
		t.Fatalf("get %s: %v", uid, err)
	}
	return e
}

func commit(t *testing.T, s *Store, uid, pw, rotationID string) {
	t.Helper()
	if err := s.Commit(t.Context(), uid, pw, rotationID); err != nil {
		t.Fatalf("commit %s: %v", uid, err)
	}
}

// passwords lists the passwords of versions.
func passwords(vs []Version) []string {
	out := make([]string, len(vs))
	for i, v := range vs {
		out[i] = v.Password
	}
	return out
}

func wantReport(t *testing.T, got, want ApplyReport) {
	t.Helper()
	norm := func(r ApplyReport) ApplyReport {
		for _, l := range []*[]string{&r.Added, &r.Updated, &r.Unchanged, &r.KeptRotated, &r.Forced, &r.Missing} {
			if len(*l) == 0 {
				*l = nil
			}
		}
		return r
	}
	if got, want := norm(got), norm(want); !reflect.DeepEqual(got, want) {
		t.Fatalf("report = %+v\n  want %+v", got, want)
	}
}

var allUIDs = []string{"cfg", "no-password", "svc-user", "web-01"}

func TestApplyGetList(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	s, _, _ := setup(t, Options{Now: func() time.Time { return now }})
	inv := testInventory(t, "Inv-Pw-0", "Rotate")

	wantReport(t, apply(t, s, inv, ApplyOptions{}), ApplyReport{Added: allUIDs})

	user := get(t, s, "svc-user")
	want, _ := inv.Record("svc-user")
	if !reflect.DeepEqual(user.Record, *want) {
		t.Fatalf("stored record = %#v\nwant %#v", user.Record, *want)
	}
	if user.Password() != "Inv-Pw-0" || user.Source != SourceInventory || user.InventoryPassword != "Inv-Pw-0" ||
		!user.InInventory || len(user.History) != 0 || user.LastRotation != nil || !user.UpdatedAt.Equal(now) ||
		user.Current != (Version{Password: "Inv-Pw-0", SetAt: now, Source: SourceInventory}) {
		t.Fatalf("entry = %+v", user)
	}
	if e := get(t, s, "no-password"); e.Password() != "" || e.Record.Password() != "" {
		t.Fatalf("record without password: %+v", e)
	}

	checkListAndGet(t, s)

	// Applying the same inventory (loaded again) changes nothing.
	wantReport(t, apply(t, s, testInventory(t, "Inv-Pw-0", "Rotate"), ApplyOptions{}), ApplyReport{Unchanged: allUIDs})
}

// checkListAndGet checks that List gives every record of testInventory by
// uid, and that Get knows no other uid.
func checkListAndGet(t *testing.T, s *Store) {
	t.Helper()
	list, err := s.List(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var uids []string
	for _, e := range list {
		uids = append(uids, e.Record.UID)
	}
	if !slices.Equal(uids, allUIDs) {
		t.Fatalf("List uids = %v, want %v", uids, allUIDs)
	}

	if _, err := s.Get(t.Context(), "nope"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get unknown: err = %v", err)
	}
	if _, err := s.Get(t.Context(), ""); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get empty uid: err = %v", err)
	}
}

func TestApplyUpdates(t *testing.T) {
	t.Parallel()
	s, _, _ := setup(t, Options{})
	apply(t, s, testInventory(t, "Inv-Pw-0", "Rotate"), ApplyOptions{})

	// An edited script title updates the user only.
	wantReport(t, apply(t, s, testInventory(t, "Inv-Pw-0", "Rotate v2"), ApplyOptions{}),
		ApplyReport{Updated: []string{"svc-user"}, Unchanged: []string{"cfg", "no-password", "web-01"}})
	user := get(t, s, "svc-user")
	if user.Record.Scripts[0].Title != "Rotate v2" || user.Password() != "Inv-Pw-0" || len(user.History) != 0 {
		t.Fatalf("entry = %+v", user)
	}

	// While the inventory governs the password, an edit is taken.
	wantReport(t, apply(t, s, testInventory(t, "Inv-Pw-1", "Rotate v2"), ApplyOptions{}),
		ApplyReport{Updated: []string{"svc-user"}, Unchanged: []string{"cfg", "no-password", "web-01"}})
	user = get(t, s, "svc-user")
	if user.Password() != "Inv-Pw-1" || user.Record.Password() != "Inv-Pw-1" || user.Source != SourceInventory ||
		user.InventoryPassword != "Inv-Pw-1" || !slices.Equal(passwords(user.History), []string{"Inv-Pw-0"}) ||
		user.History[0].Source != SourceInventory {
		t.Fatalf("entry = %+v", user)
	}
}

func TestCommitKeepsRotatedPassword(t *testing.T) {
	t.Parallel()
	s, _, _ := setup(t, Options{})
	apply(t, s, testInventory(t, "Inv-Pw-0", "Rotate"), ApplyOptions{})
	commit(t, s, "svc-user", "Rotated-Pw-1", "rot-1")

	user := get(t, s, "svc-user")
	if user.Password() != "Rotated-Pw-1" || user.Record.Password() != "Rotated-Pw-1" || user.Source != SourceRotation ||
		user.Current.RotationID != "rot-1" || user.Current.Source != SourceRotation ||
		!slices.Equal(passwords(user.History), []string{"Inv-Pw-0"}) || user.History[0].Source != SourceInventory {
		t.Fatalf("after commit: %+v", user)
	}
	rotatedKeptFromInventory(t, s)
	rotatedReplacedByForce(t, s)
}

// rotatedKeptFromInventory: applying the inventory again, edited or not,
// does not take svc-user's rotated password back.
func rotatedKeptFromInventory(t *testing.T, s *Store) {
	t.Helper()
	// The unchanged inventory does not bring the old password back, and
	// there is nothing to report.
	others := []string{"cfg", "no-password", "web-01"}
	wantReport(t, apply(t, s, testInventory(t, "Inv-Pw-0", "Rotate"), ApplyOptions{}), ApplyReport{Unchanged: allUIDs})
	// Nor does Force: the inventory's password was not edited.
	wantReport(t, apply(t, s, testInventory(t, "Inv-Pw-0", "Rotate"), ApplyOptions{Force: true}), ApplyReport{Unchanged: allUIDs})
	if got := get(t, s, "svc-user").Password(); got != "Rotated-Pw-1" {
		t.Fatalf("password after re-apply = %q", got)
	}

	// An edited inventory password is kept out, and reported, at every
	// apply.
	for range 2 {
		wantReport(t, apply(t, s, testInventory(t, "Edited-Pw", "Rotate"), ApplyOptions{}),
			ApplyReport{Unchanged: allUIDs, KeptRotated: []string{"svc-user"}})
	}
	// With another change, the record is updated and the password still
	// kept.
	wantReport(t, apply(t, s, testInventory(t, "Edited-Pw", "Rotate v2"), ApplyOptions{}),
		ApplyReport{Updated: []string{"svc-user"}, Unchanged: others, KeptRotated: []string{"svc-user"}})
	user := get(t, s, "svc-user")
	if user.Password() != "Rotated-Pw-1" || user.Record.Password() != "Rotated-Pw-1" || user.InventoryPassword != "Inv-Pw-0" ||
		user.Source != SourceRotation || user.Record.Scripts[0].Title != "Rotate v2" {
		t.Fatalf("after edited apply: %+v", user)
	}
}

// rotatedReplacedByForce: Force takes svc-user's edited inventory
// password, and the inventory governs the password again.
func rotatedReplacedByForce(t *testing.T, s *Store) {
	t.Helper()
	// Force takes the edited password; the rotated one goes to history.
	others := []string{"cfg", "no-password", "web-01"}
	wantReport(t, apply(t, s, testInventory(t, "Edited-Pw", "Rotate v2"), ApplyOptions{Force: true}),
		ApplyReport{Updated: []string{"svc-user"}, Unchanged: others, Forced: []string{"svc-user"}})
	user := get(t, s, "svc-user")
	if user.Password() != "Edited-Pw" || user.Record.Password() != "Edited-Pw" || user.Source != SourceInventory ||
		user.Current.Source != SourceForced || user.InventoryPassword != "Edited-Pw" ||
		!slices.Equal(passwords(user.History), []string{"Rotated-Pw-1", "Inv-Pw-0"}) ||
		user.History[0].RotationID != "rot-1" || user.History[0].Source != SourceRotation {
		t.Fatalf("after forced apply: %+v", user)
	}
	wantReport(t, apply(t, s, testInventory(t, "Edited-Pw", "Rotate v2"), ApplyOptions{}), ApplyReport{Unchanged: allUIDs})

	// The inventory governs again: its next edit is taken without Force.
	apply(t, s, testInventory(t, "Edited-Pw-2", "Rotate v2"), ApplyOptions{})
	if user := get(t, s, "svc-user"); user.Password() != "Edited-Pw-2" || user.Source != SourceInventory {
		t.Fatalf("after edit: %+v", user)
	}
}

func TestInventoryEditedToRotatedPassword(t *testing.T) {
	t.Parallel()
	s, _, _ := setup(t, Options{})
	apply(t, s, testInventory(t, "Inv-Pw-0", "Rotate"), ApplyOptions{})
	commit(t, s, "svc-user", "Rotated-Pw-1", "rot-1")

	// The user copied the rotated password into the inventory: nothing is
	// kept from them, and the inventory governs the password again.
	wantReport(t, apply(t, s, testInventory(t, "Rotated-Pw-1", "Rotate"), ApplyOptions{}),
		ApplyReport{Updated: []string{"svc-user"}, Unchanged: []string{"cfg", "no-password", "web-01"}})
	user := get(t, s, "svc-user")
	if user.Password() != "Rotated-Pw-1" || user.Source != SourceInventory || user.InventoryPassword != "Rotated-Pw-1" ||
		user.Current.RotationID != "rot-1" || len(user.History) != 1 {
		t.Fatalf("entry = %+v", user)
	}
}

func TestCommitHistory(t *testing.T) {
	t.Parallel()
	s, _, _ := setup(t, Options{HistoryLimit: 3})
	apply(t, s, testInventory(t, "Inv-Pw-0", "Rotate"), ApplyOptions{})
	for i := 1; i <= 5; i++ {
		commit(t, s, "svc-user", fmt.Sprintf("Pw-%d", i), fmt.Sprintf("rot-%d", i))
	}
	user := get(t, s, "svc-user")
	if user.Password() != "Pw-5" || !slices.Equal(passwords(user.History), []string{"Pw-4", "Pw-3", "Pw-2"}) {
		t.Fatalf("password %q, history %v", user.Password(), passwords(user.History))
	}
	for i, v := range user.History {
		if want := fmt.Sprintf("rot-%d", 4-i); v.RotationID != want || v.Source != SourceRotation {
			t.Errorf("history[%d] = %+v, want rotation %s", i, v, want)
		}
	}

	// A repeated commit of the same rotation changes nothing.
	commit(t, s, "svc-user", "Pw-5", "rot-5")
	if again := get(t, s, "svc-user"); !reflect.DeepEqual(again, user) {
		t.Fatalf("repeated commit changed the entry: %+v", again)
	}

	// A record without password gets a password field.
	commit(t, s, "no-password", "First-Rotated", "rot-a")
	e := get(t, s, "no-password")
	if e.Password() != "First-Rotated" || e.Record.Password() != "First-Rotated" || len(e.History) != 0 {
		t.Fatalf("record without password after commit: %+v", e)
	}

	if err := s.Commit(t.Context(), "nope", "x", "rot-x"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("commit unknown: err = %v", err)
	}
	if err := s.Commit(t.Context(), "svc-user", "", "rot-x"); err == nil {
		t.Fatal("commit of an empty password succeeded")
	}
}

func TestSetLastRotation(t *testing.T) {
	t.Parallel()
	s, _, _ := setup(t, Options{})
	apply(t, s, testInventory(t, "Inv-Pw-0", "Rotate"), ApplyOptions{})
	r := Rotation{ID: "rot-1", State: "failed", At: time.Date(2026, 3, 1, 3, 0, 0, 0, time.UTC), Note: "1 of 2 scripts failed"}
	if err := s.SetLastRotation(t.Context(), "svc-user", r); err != nil {
		t.Fatal(err)
	}
	if got := get(t, s, "svc-user").LastRotation; got == nil || *got != r {
		t.Fatalf("LastRotation = %+v", got)
	}
	// Apply keeps it.
	apply(t, s, testInventory(t, "Inv-Pw-0", "Rotate v2"), ApplyOptions{})
	if got := get(t, s, "svc-user").LastRotation; got == nil || *got != r {
		t.Fatalf("LastRotation after apply = %+v", got)
	}
	if err := s.SetLastRotation(t.Context(), "nope", r); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown record: err = %v", err)
	}
}

func TestMissingRecordsKept(t *testing.T) {
	t.Parallel()
	s, _, _ := setup(t, Options{})
	apply(t, s, testInventory(t, "Inv-Pw-0", "Rotate"), ApplyOptions{})
	commit(t, s, "svc-user", "Rotated-Pw-1", "rot-1")

	for range 2 {
		wantReport(t, apply(t, s, withoutUser(t, testInventory(t, "Inv-Pw-0", "Rotate")), ApplyOptions{}),
			ApplyReport{Unchanged: []string{"cfg", "no-password", "web-01"}, Missing: []string{"svc-user"}})
	}
	user := get(t, s, "svc-user")
	if user.InInventory || user.Password() != "Rotated-Pw-1" {
		t.Fatalf("missing record: %+v", user)
	}
	list, err := s.List(t.Context())
	if err != nil || len(list) != len(allUIDs) {
		t.Fatalf("List = %d entries, %v", len(list), err)
	}

	wantReport(t, apply(t, s, testInventory(t, "Inv-Pw-0", "Rotate"), ApplyOptions{}),
		ApplyReport{Updated: []string{"svc-user"}, Unchanged: []string{"cfg", "no-password", "web-01"}})
	if user := get(t, s, "svc-user"); !user.InInventory || user.Password() != "Rotated-Pw-1" {
		t.Fatalf("returned record: %+v", user)
	}
}

func TestOverlay(t *testing.T) {
	t.Parallel()
	s, _, _ := setup(t, Options{})
	apply(t, s, parseInventory(t, richInventory), ApplyOptions{})
	commit(t, s, "svc-user", "Rotated-Pw-1", "rot-1")
	commit(t, s, "cfg", "Cfg-Rotated", "rot-2") // a record without password field

	inv := parseInventory(t, richInventory)
	pristine := parseInventory(t, richInventory)
	pristine.Dir = inv.Dir
	over, err := s.Overlay(t.Context(), inv)
	if err != nil {
		t.Fatal(err)
	}
	user, _ := over.Record("svc-user")
	if user.Password() != "Rotated-Pw-1" {
		t.Fatalf("overlay password = %q", user.Password())
	}
	// The other values of a multi-valued password field stay.
	if got := user.Fields[1].Value; !reflect.DeepEqual(got, []any{"Rotated-Pw-1", "Second-Pw"}) {
		t.Fatalf("password field = %#v", got)
	}
	if cfg, _ := over.Record("cfg"); cfg.Password() != "Cfg-Rotated" {
		t.Fatalf("overlay of a record without password field = %q", cfg.Password())
	}
	for _, uid := range []string{"admin", "web-01"} {
		a, _ := over.Record(uid)
		b, _ := inv.Record(uid)
		if !reflect.DeepEqual(a, b) {
			t.Fatalf("overlay changed %s, which no rotation committed", uid)
		}
	}

	// The original is untouched, even once the copy is scribbled over.
	for i := range over.Records {
		scribble(reflect.ValueOf(&over.Records[i]).Elem())
	}
	over.Records[0].UID = "changed"
	if !reflect.DeepEqual(inv, pristine) {
		t.Fatal("Overlay or changes to its result changed the inventory")
	}
	if orig, _ := inv.Record("svc-user"); orig.Password() != "First-Pw" {
		t.Fatalf("inventory password = %q", orig.Password())
	}

	// Records unknown to the store are copied as they are.
	fresh, err := s.Overlay(t.Context(), testInventory(t, "x", "y"))
	if err != nil {
		t.Fatal(err)
	}
	if r, _ := fresh.Record("svc-user"); r.Password() != "Rotated-Pw-1" {
		t.Fatalf("overlay of another inventory = %q", r.Password())
	}
	if r, _ := fresh.Record("no-password"); r.Password() != "" {
		t.Fatalf("record not in the store: %q", r.Password())
	}
}

// scribble changes, in place, every string, byte, number and value
// reachable from v through slices, maps and pointers, without replacing
// them: what the copy shares with the original would change there too.
func scribble(v reflect.Value) {
	switch v.Kind() {
	case reflect.String, reflect.Uint8, reflect.Int, reflect.Int64:
		scribbleScalar(v)
	case reflect.Pointer:
		if !v.IsNil() {
			scribble(v.Elem())
		}
	case reflect.Slice:
		for i := range v.Len() {
			scribble(v.Index(i))
		}
	case reflect.Map:
		scribbleMap(v)
	case reflect.Struct:
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				scribble(v.Field(i))
			}
		}
	case reflect.Interface:
		scribbleInterface(v)
	}
}

// scribbleScalar changes a settable string, byte or integer.
func scribbleScalar(v reflect.Value) {
	if !v.CanSet() {
		return
	}
	switch v.Kind() {
	case reflect.String:
		v.SetString(v.String() + "!")
	case reflect.Uint8:
		v.SetUint(v.Uint() ^ 0xff)
	case reflect.Int, reflect.Int64:
		v.SetInt(v.Int() + 1)
	}
}

// scribbleMap changes each value of a map (map values cannot be set in
// place: each is copied, changed and stored back).
func scribbleMap(v reflect.Value) {
	for _, k := range v.MapKeys() {
		e := v.MapIndex(k)
		c := reflect.New(e.Type()).Elem()
		c.Set(e)
		if c.Kind() == reflect.Interface && !c.IsNil() {
			inner := reflect.New(c.Elem().Type()).Elem()
			inner.Set(c.Elem())
			scribble(inner)
			c.Set(inner)
		} else {
			scribble(c)
		}
		v.SetMapIndex(k, c)
	}
}

// scribbleInterface changes the value an interface holds: a slice or map
// in place (it shares its backing array or map), anything else through a
// copy stored back.
func scribbleInterface(v reflect.Value) {
	if v.IsNil() {
		return
	}
	inner := reflect.New(v.Elem().Type()).Elem()
	inner.Set(v.Elem())
	switch inner.Kind() {
	case reflect.Slice, reflect.Map:
		scribble(inner) // shares the backing array or map
	default:
		scribble(inner)
		v.Set(inner)
	}
}

func TestConcurrentWritesLoseNothing(t *testing.T) {
	t.Parallel()
	s, _, _ := setup(t, Options{HistoryLimit: 20})
	apply(t, s, testInventory(t, "Inv-Pw-0", "Title-0"), ApplyOptions{})

	const n = 10
	// Inventories whose applies rewrite the record meanwhile.
	invs := make([]*inventory.Inventory, n)
	for i := range n {
		invs[i] = testInventory(t, "Inv-Pw-0", fmt.Sprintf("Title-%d", i%3))
	}
	errs := make(chan error, 2*n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			errs <- s.Commit(context.Background(), "svc-user", fmt.Sprintf("Pw-%d", i), fmt.Sprintf("rot-%d", i))
		})
		wg.Go(func() {
			_, err := s.Apply(context.Background(), invs[i], ApplyOptions{})
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}

	user := get(t, s, "svc-user")
	if len(user.History) != n {
		t.Fatalf("history has %d passwords, want %d: %v", len(user.History), n, passwords(user.History))
	}
	all := append(passwords(user.History), user.Password())
	slices.Sort(all)
	want := []string{"Inv-Pw-0"}
	for i := range n {
		want = append(want, fmt.Sprintf("Pw-%d", i))
	}
	slices.Sort(want)
	if !slices.Equal(all, want) {
		t.Fatalf("passwords = %v, want %v", all, want)
	}
	if user.Source != SourceRotation || user.Record.Password() != user.Password() {
		t.Fatalf("entry = %+v", user)
	}
}

func TestNoPlaintextAtRest(t *testing.T) {
	t.Parallel()
	const (
		invMarker     = "Marker-Vault-Pw-7c1e"
		rotatedMarker = "Marker-Rotated-Pw-93ad"
		titleMarker   = "Marker-Script-Title-51b0"
	)
	s, _, e := setup(t, Options{})
	apply(t, s, testInventory(t, invMarker, titleMarker), ApplyOptions{})
	commit(t, s, "svc-user", rotatedMarker, "rot-1")
	if err := s.SetLastRotation(t.Context(), "svc-user", Rotation{ID: "rot-1", State: "completed", At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	e.stop()

	var needles [][]byte
	for _, m := range []string{invMarker, rotatedMarker, titleMarker, "Service user"} {
		needles = append(needles, []byte(m))
		// Its base64 at each alignment, without the edge characters that
		// depend on the neighbouring bytes.
		for pad := range 3 {
			enc := base64.StdEncoding.EncodeToString([]byte(strings.Repeat("x", pad) + m))
			enc = strings.TrimRight(enc, "=")
			needles = append(needles, []byte(enc[4:len(enc)-4]))
		}
	}
	// A control: the record keys are stored in the clear, so a walk that
	// reads the data finds them.
	control := []byte(recordKey("svc-user"))
	var files int
	var sawControl bool
	err := filepath.WalkDir(e.dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		files++
		sawControl = sawControl || bytes.Contains(data, control)
		for _, n := range needles {
			if bytes.Contains(data, n) {
				t.Errorf("%s holds %q", path, n)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files == 0 || !sawControl {
		t.Fatalf("walked %d files, control key found: %v", files, sawControl)
	}
}

func TestWrongKey(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	e := startBroker(t, dir)
	key := NewKey()
	s, err := Open(t.Context(), e.js, key, Options{})
	if err != nil {
		t.Fatal(err)
	}
	apply(t, s, testInventory(t, "Inv-Pw-0", "Rotate"), ApplyOptions{})
	commit(t, s, "svc-user", "Rotated-Pw-1", "rot-1")
	e.stop()

	// The store survives a restart, and only its key opens it.
	e = startBroker(t, dir)
	other := NewKey()
	_, err = Open(t.Context(), e.js, other, Options{KeySource: "/data/vault.key"})
	if !errors.Is(err, ErrWrongKey) {
		t.Fatalf("Open with another key: err = %v, want ErrWrongKey", err)
	}
	msg := err.Error()
	if !strings.Contains(msg, "/data/vault.key") || !strings.Contains(msg, "--data") {
		t.Errorf("error does not say what to do: %v", err)
	}
	for _, k := range []Key{key, other} {
		if strings.Contains(msg, k.String()) || strings.Contains(msg, fmt.Sprintf("%x", k[:])) {
			t.Errorf("error holds key material: %v", err)
		}
	}

	s, err = Open(t.Context(), e.js, key, Options{})
	if err != nil {
		t.Fatalf("reopen with the right key: %v", err)
	}
	if user := get(t, s, "svc-user"); user.Password() != "Rotated-Pw-1" || user.Source != SourceRotation {
		t.Fatalf("after restart: %+v", user)
	}
}

func TestOpenOptions(t *testing.T) {
	t.Parallel()
	e := startBroker(t, t.TempDir())
	for _, opts := range []Options{{Replicas: -1}, {HistoryLimit: -1}} {
		if _, err := Open(t.Context(), e.js, NewKey(), opts); err == nil {
			t.Errorf("Open(%+v) succeeded", opts)
		}
	}
	s, err := Open(t.Context(), e.js, NewKey(), Options{Bucket: "OTHER_RECORDS"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.js.KeyValue(t.Context(), "OTHER_RECORDS"); err != nil {
		t.Fatalf("bucket not created: %v", err)
	}
	// A value moved to another record's key does not open.
	apply(t, s, testInventory(t, "Inv-Pw-0", "Rotate"), ApplyOptions{})
	kv, _ := e.js.KeyValue(t.Context(), "OTHER_RECORDS")
	moved, err := kv.Get(t.Context(), recordKey("svc-user"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(t.Context(), recordKey("cfg"), moved.Value()); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(t.Context(), "cfg"); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("moved value: err = %v, want ErrWrongKey", err)
	}
}
