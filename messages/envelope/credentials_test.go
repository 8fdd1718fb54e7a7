package envelope_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/nats-io/nkeys"

	"github.com/postrotate/postrotate/messages/envelope"
)

// newCredentials returns valid credentials for host, with fresh keys.
func newCredentials(t testing.TB, host string) envelope.Credentials {
	t.Helper()
	coord, err := envelope.NewCoordinator()
	if err != nil {
		t.Fatal(err)
	}
	user, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	curve, err := nkeys.CreateCurveKeys()
	if err != nil {
		t.Fatal(err)
	}
	us, _ := user.Seed()
	cs, _ := curve.Seed()
	sign, sender := coord.PublicKeys()
	return envelope.Credentials{
		Host: host, NATS: "nats://127.0.0.1:4222", UserSeed: string(us), CurveSeed: string(cs),
		CoordinatorSigningKey: sign, CoordinatorCurveKey: sender, InboxPrefix: envelope.InboxPrefix(host),
	}
}

func TestCredentialsRoundTrip(t *testing.T) {
	t.Parallel()
	c := newCredentials(t, "gateway 1")
	path := filepath.Join(t.TempDir(), "gw.creds")
	// An existing, looser file is replaced by a 0600 one.
	if err := os.WriteFile(path, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := envelope.WriteCredentials(path, c); err != nil {
		t.Fatal(err)
	}
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if runtime.GOOS != "windows" && info.Mode().Perm() != 0o600 {
		t.Fatalf("mode %04o, want 0600", info.Mode().Perm())
	}
	got, err := envelope.ReadCredentials(path)
	if err != nil {
		t.Fatal(err)
	}
	if got != c {
		t.Fatalf("read %+v, wrote %+v", got, c)
	}
	if got.InboxPrefix != "_INBOX_gateway_201" {
		t.Fatalf("inbox prefix %q", got.InboxPrefix)
	}
	trust, err := got.Trust()
	if err != nil {
		t.Fatal(err)
	}
	curve, _ := nkeys.FromCurveSeed([]byte(c.CurveSeed))
	if pub, _ := curve.PublicKey(); trust.CurveKey() != pub {
		t.Fatalf("trust curve key %s, want %s", trust.CurveKey(), pub)
	}
	user, err := got.User()
	if err != nil {
		t.Fatal(err)
	}
	if pub, _ := user.PublicKey(); !nkeys.IsValidPublicUserKey(pub) {
		t.Fatalf("user key %s", pub)
	}
}

func TestReadCredentialsRefusesExposedFile(t *testing.T) {
	t.Parallel()
	if runtime.GOOS == "windows" {
		t.Skip("file modes are not enforced on Windows")
	}
	path := filepath.Join(t.TempDir(), "gw.creds")
	c := newCredentials(t, "gw")
	if err := envelope.WriteCredentials(path, c); err != nil {
		t.Fatal(err)
	}
	for _, mode := range []os.FileMode{0o644, 0o640, 0o604} {
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
		_, err := envelope.ReadCredentials(path)
		if !errors.Is(err, envelope.ErrCredentialsExposed) {
			t.Fatalf("mode %04o: %v, want ErrCredentialsExposed", mode, err)
		}
		if strings.Contains(err.Error(), c.UserSeed) || !strings.Contains(err.Error(), "chmod 600") {
			t.Fatalf("mode %04o: error %q", mode, err)
		}
	}
}

func TestDecodeCredentialsInvalid(t *testing.T) {
	t.Parallel()
	good := newCredentials(t, "gw")
	other := newCredentials(t, "gw")
	for name, tc := range map[string]struct {
		change func(*envelope.Credentials)
		want   string
	}{
		"no host":           {func(c *envelope.Credentials) { c.Host = "" }, "host"},
		"curve as user":     {func(c *envelope.Credentials) { c.UserSeed = c.CurveSeed }, "user_seed"},
		"user as curve":     {func(c *envelope.Credentials) { c.CurveSeed = c.UserSeed }, "curve_seed"},
		"public signing":    {func(c *envelope.Credentials) { c.CoordinatorSigningKey = c.CoordinatorCurveKey }, "coordinator_signing_key"},
		"public curve":      {func(c *envelope.Credentials) { c.CoordinatorCurveKey = c.CoordinatorSigningKey }, "coordinator_curve_key"},
		"other host inbox":  {func(c *envelope.Credentials) { c.InboxPrefix = envelope.InboxPrefix("gw2") }, "inbox_prefix"},
		"wildcard prefix":   {func(c *envelope.Credentials) { c.Prefix = "post.>" }, "prefix"},
		"seed of another":   {func(c *envelope.Credentials) { c.UserSeed = corrupt(other.UserSeed) }, "user_seed"},
		"empty user seed":   {func(c *envelope.Credentials) { c.UserSeed = "" }, "user_seed"},
		"empty curve seed":  {func(c *envelope.Credentials) { c.CurveSeed = "" }, "curve_seed"},
		"empty inbox":       {func(c *envelope.Credentials) { c.InboxPrefix = "" }, "inbox_prefix"},
		"truncated signing": {func(c *envelope.Credentials) { c.CoordinatorSigningKey = c.CoordinatorSigningKey[:10] }, "coordinator_signing_key"},
	} {
		c := good
		tc.change(&c)
		data, err := c.Encode()
		if err != nil {
			t.Fatal(err)
		}
		_, err = envelope.DecodeCredentials(data)
		if !errors.Is(err, envelope.ErrInvalidCredentials) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an ErrInvalidCredentials naming %s", name, err, tc.want)
		}
	}
	for name, data := range map[string]string{
		"not json":      "SUAB...",
		"unknown field": `{"host": "gw", "usr_seed": "x"}`,
		"two objects":   `{} {}`,
		"wrong type":    `{"host": 3}`,
	} {
		if _, err := envelope.DecodeCredentials([]byte(data)); !errors.Is(err, envelope.ErrInvalidCredentials) {
			t.Errorf("%s: %v, want ErrInvalidCredentials", name, err)
		}
	}
}

func FuzzDecodeCredentials(f *testing.F) {
	c := newCredentials(f, "gw")
	data, err := c.Encode()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(data)
	f.Add([]byte(`{"host": "gw"}`))
	f.Add([]byte(`{"user_seed": "` + c.UserSeed + `", "extra": 1}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := envelope.DecodeCredentials(data)
		if err != nil {
			if !errors.Is(err, envelope.ErrInvalidCredentials) {
				t.Fatalf("error %v does not wrap ErrInvalidCredentials", err)
			}
			if c.UserSeed != "" && strings.Contains(err.Error(), c.UserSeed) {
				t.Fatal("an error shows a seed")
			}
			return
		}
		if err := got.Validate(); err != nil {
			t.Fatalf("decoded credentials do not validate: %v", err)
		}
		if _, err := got.Trust(); err != nil {
			t.Fatalf("decoded credentials give no trust: %v", err)
		}
		if _, err := got.User(); err != nil {
			t.Fatalf("decoded credentials give no user: %v", err)
		}
	})
}

// A worker's credentials: one file, mode 0600, that postrotate-worker
// --creds reads.
func ExampleWriteCredentials() {
	coord, _ := envelope.NewCoordinator() // the coordinator's identity
	user, _ := nkeys.CreateUser()         // the worker's NATS user
	curve, _ := nkeys.CreateCurveKeys()   // the worker's curve key
	userSeed, _ := user.Seed()
	curveSeed, _ := curve.Seed()
	sign, sender := coord.PublicKeys()
	c := envelope.Credentials{
		Host: "gateway-1", UserSeed: string(userSeed), CurveSeed: string(curveSeed),
		CoordinatorSigningKey: sign, CoordinatorCurveKey: sender, InboxPrefix: envelope.InboxPrefix("gateway-1"),
	}
	dir, _ := os.MkdirTemp("", "example")
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "gateway-1.creds")
	if err := envelope.WriteCredentials(path, c); err != nil {
		fmt.Println(err)
		return
	}
	read, err := envelope.ReadCredentials(path)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(read.Host, read.InboxPrefix)
	// Output: gateway-1 _INBOX_gateway-1
}

// corrupt changes one character in the middle of a seed: five bits of its
// key change, which its CRC-16 always detects.
func corrupt(seed string) string {
	c := byte('A')
	if seed[10] == 'A' {
		c = 'B'
	}
	return seed[:10] + string(c) + seed[11:]
}
