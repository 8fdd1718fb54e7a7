package identity_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"
	"go.uber.org/goleak"

	"github.com/postrotate/postrotate/coordinator/broker"
	"github.com/postrotate/postrotate/coordinator/broker/brokertest"
	"github.com/postrotate/postrotate/coordinator/identity"
	"github.com/postrotate/postrotate/coordinator/vault"
	"github.com/postrotate/postrotate/messages"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

type fixture struct {
	js  jetstream.JetStream
	key vault.Key
}

func setup(t *testing.T) fixture {
	t.Helper()
	js, _ := brokertest.JetStream(t, broker.Options{StoreDir: t.TempDir()})
	return fixture{js: js, key: vault.NewKey()}
}

func (f fixture) open(t *testing.T, key vault.Key) *identity.Store {
	t.Helper()
	s, err := identity.Open(t.Context(), f.js, identity.Options{Key: &key})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// The coordinator's identity is created once and shared by every store
// opened with the vault key; another key cannot read it.
func TestCoordinatorIdentity(t *testing.T) {
	t.Parallel()
	f := setup(t)
	c1, err := f.open(t, f.key).Coordinator(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	c2, err := f.open(t, f.key).Coordinator(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	s1, x1 := c1.PublicKeys()
	s2, x2 := c2.PublicKeys()
	if s1 != s2 || x1 != x2 {
		t.Fatalf("two identities: %s %s and %s %s", s1, x1, s2, x2)
	}
	if _, err := f.open(t, vault.NewKey()).Coordinator(t.Context()); !errors.Is(err, vault.ErrWrongKey) {
		t.Fatalf("another vault key: %v, want ErrWrongKey", err)
	}
	// Its seeds are not in the bucket in clear.
	kv, err := f.js.KeyValue(t.Context(), identity.Bucket(messages.Subjects{}))
	if err != nil {
		t.Fatal(err)
	}
	e, err := kv.Get(t.Context(), "coordinator")
	if err != nil {
		t.Fatal(err)
	}
	sign, curve := c1.Seeds()
	if strings.Contains(string(e.Value()), sign) || strings.Contains(string(e.Value()), curve) {
		t.Fatal("the coordinator's seeds are stored in clear")
	}
}

func TestCoordinatorUserIsDerivedFromTheKey(t *testing.T) {
	t.Parallel()
	k := vault.NewKey()
	a, _ := identity.CoordinatorUser(k).PublicKey()
	b, _ := identity.CoordinatorUser(k).PublicKey()
	c, _ := identity.CoordinatorUser(vault.NewKey()).PublicKey()
	if a != b || a == c || !nkeys.IsValidPublicUserKey(a) {
		t.Fatalf("users %s %s %s", a, b, c)
	}
}

func TestEnrollReplaceRevoke(t *testing.T) {
	t.Parallel()
	f := setup(t)
	s := f.open(t, f.key)
	first := enrollFirst(t, s)
	if _, err := s.Enroll(t.Context(), "web 01"); err != nil {
		t.Fatal(err)
	}
	second := enrollAgain(t, s, first)
	listAndRevoke(t, s, second)
	if _, err := s.Enroll(t.Context(), ""); !errors.Is(err, identity.ErrInvalidHost) {
		t.Fatalf("empty host: %v", err)
	}
}

// enrollFirst enrolls gw, which had no identity, and returns its
// enrolment.
func enrollFirst(t *testing.T, s *identity.Store) identity.Enrolment {
	t.Helper()
	ctx := t.Context()
	if _, err := s.CurveKey(ctx, "gw"); !errors.Is(err, identity.ErrNotEnrolled) {
		t.Fatalf("before enrolment: %v", err)
	}
	first, err := s.Enroll(ctx, "gw")
	if err != nil {
		t.Fatal(err)
	}
	if first.Replaced || !nkeys.IsValidPublicUserKey(first.UserKey) || !nkeys.IsValidPublicCurveKey(first.CurveKey) ||
		!strings.HasPrefix(first.UserSeed, "SU") || !strings.HasPrefix(first.CurveSeed, "SX") {
		t.Fatalf("enrolment %+v", first.Worker)
	}
	if k, err := s.CurveKey(ctx, "gw"); err != nil || k != first.CurveKey {
		t.Fatalf("curve key %q, %v", k, err)
	}
	return first
}

// enrollAgain enrolls gw again: new keys replace those of first.
func enrollAgain(t *testing.T, s *identity.Store, first identity.Enrolment) identity.Enrolment {
	t.Helper()
	second, err := s.Enroll(t.Context(), "gw")
	if err != nil {
		t.Fatal(err)
	}
	if !second.Replaced || second.UserKey == first.UserKey || second.CurveKey == first.CurveKey {
		t.Fatalf("re-enrolment %+v", second)
	}
	return second
}

// listAndRevoke checks the workers enrolled (gw as second, and web 01),
// then revokes gw, once.
func listAndRevoke(t *testing.T, s *identity.Store, second identity.Enrolment) {
	t.Helper()
	ctx := t.Context()
	all, err := s.Workers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 2 || all[0].Host != "gw" || all[0].UserKey != second.UserKey || all[1].Host != "web 01" {
		t.Fatalf("workers %+v", all)
	}
	if err := s.Revoke(ctx, "gw"); err != nil {
		t.Fatal(err)
	}
	if err := s.Revoke(ctx, "gw"); !errors.Is(err, identity.ErrNotEnrolled) {
		t.Fatalf("second revoke: %v", err)
	}
	if all, _ := s.Workers(ctx); len(all) != 1 || all[0].Host != "web 01" {
		t.Fatalf("after revoke: %+v", all)
	}
}

// A local worker's identity is kept and reused; it replaces an identity
// enrolled for an external worker.
func TestLocalIdentityIsReused(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := t.Context()
	ext, err := f.open(t, f.key).Enroll(ctx, "gw")
	if err != nil {
		t.Fatal(err)
	}
	a, err := f.open(t, f.key).Local(ctx, "gw")
	if err != nil {
		t.Fatal(err)
	}
	b, err := f.open(t, f.key).Local(ctx, "gw")
	if err != nil {
		t.Fatal(err)
	}
	if !a.Replaced || a.Kept || a.UserKey == ext.UserKey || a.UserSeed != b.UserSeed || a.CurveSeed != b.CurveSeed || !b.Local || !b.Kept {
		t.Fatalf("local identities %+v and %+v", a.Worker, b.Worker)
	}
}

func TestUsersAndCredentials(t *testing.T) {
	t.Parallel()
	f := setup(t)
	s := f.open(t, f.key)
	en, err := s.Enroll(t.Context(), "gw")
	if err != nil {
		t.Fatal(err)
	}
	coord, err := s.Coordinator(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	subj := messages.Subjects{Prefix: "acme"}
	c := identity.Credentials(en, coord, subj, "nats://x:4222")
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.Prefix != "acme" || c.InboxPrefix != "_INBOX_gw" {
		t.Fatalf("credentials %+v", c)
	}
	cu, _ := identity.CoordinatorUser(f.key).PublicKey()
	users := identity.Users(subj, cu, []identity.Worker{en.Worker})
	if len(users) != 2 || users[0].Permissions != nil || users[1].NKey != en.UserKey || users[1].Permissions == nil {
		t.Fatalf("users %+v", users)
	}
	if identity.Bucket(subj) != "ACME_IDENTITIES" {
		t.Fatalf("bucket %s", identity.Bucket(subj))
	}
}
