package envelope_test

import (
	"bytes"
	"encoding/base64"
	"errors"
	"reflect"
	"testing"

	"github.com/nats-io/nkeys"

	"github.com/postrotate/postrotate/messages"
	"github.com/postrotate/postrotate/messages/envelope"
)

const marker = "Mk-Envelope-S3cret-5d2a"

func secret() messages.TaskSecret {
	return messages.TaskSecret{
		Stdin:       []byte(base64.StdEncoding.EncodeToString([]byte(`{"newPassword":"`+marker+`"}`)) + "\n"),
		Mask:        []string{marker},
		Credential:  &messages.Credential{Login: "root", Password: marker},
		NewPassword: marker,
	}
}

// keys is a coordinator and the trust of two workers, a and b.
type keys struct {
	coord  *envelope.Coordinator
	a, b   *envelope.Trust
	signer string
}

func setup(t *testing.T) keys {
	t.Helper()
	c, err := envelope.NewCoordinator()
	if err != nil {
		t.Fatal(err)
	}
	a, err := c.EphemeralTrust()
	if err != nil {
		t.Fatal(err)
	}
	b, err := c.EphemeralTrust()
	if err != nil {
		t.Fatal(err)
	}
	signer, _ := c.PublicKeys()
	return keys{coord: c, a: a, b: b, signer: signer}
}

func TestSignVerify(t *testing.T) {
	t.Parallel()
	k := setup(t)
	data := []byte(`{"id":"r-1-1","host":"gw"}`)
	sig, signer, err := k.coord.Sign(data)
	if err != nil {
		t.Fatal(err)
	}
	if signer != k.signer || !nkeys.IsValidPublicAccountKey(signer) {
		t.Fatalf("signer = %q, want the coordinator's account key %q", signer, k.signer)
	}
	if err := k.a.Verify(data, sig, signer); err != nil {
		t.Fatalf("Verify(signed data) = %v", err)
	}
	if err := k.coord.Verify(data, sig, signer); err != nil {
		t.Fatalf("the coordinator's own Verify(signed data) = %v", err)
	}

	other, err := envelope.NewCoordinator()
	if err != nil {
		t.Fatal(err)
	}
	otherSig, otherSigner, err := other.Sign(data)
	if err != nil {
		t.Fatal(err)
	}
	flipped := bytes.Clone(data)
	flipped[len(flipped)/2] ^= 1
	for _, tt := range []struct {
		name              string
		data              []byte
		signature, signer string
		want              error
	}{
		{"unsigned", data, "", "", envelope.ErrUnsigned},
		{"one byte changed", flipped, sig, signer, envelope.ErrBadSignature},
		{"one byte appended", append(bytes.Clone(data), ' '), sig, signer, envelope.ErrBadSignature},
		{"signed by another key", data, otherSig, otherSigner, envelope.ErrUnknownSigner},
		{"another key's signature under the coordinator's name", data, otherSig, signer, envelope.ErrBadSignature},
		{"signature without signer", data, sig, "", envelope.ErrUnknownSigner},
		{"signer without signature", data, "", signer, envelope.ErrBadSignature},
		{"signature not base64", data, "!!" + sig, signer, envelope.ErrBadSignature},
	} {
		if err := k.a.Verify(tt.data, tt.signature, tt.signer); !errors.Is(err, tt.want) {
			t.Errorf("%s: Verify = %v, want %v", tt.name, err, tt.want)
		}
		if err := k.coord.Verify(tt.data, tt.signature, tt.signer); !errors.Is(err, tt.want) {
			t.Errorf("%s: the coordinator's Verify = %v, want %v", tt.name, err, tt.want)
		}
	}
}

func TestSealOpen(t *testing.T) {
	t.Parallel()
	k := setup(t)
	sealed, err := k.coord.SealSecret(secret(), k.a.CurveKey())
	if err != nil {
		t.Fatal(err)
	}
	for _, leak := range []string{marker, base64.StdEncoding.EncodeToString([]byte(marker)), base64.RawURLEncoding.EncodeToString([]byte(marker))} {
		if bytes.Contains(sealed, []byte(leak)) {
			t.Fatalf("sealed secret shows %q", leak)
		}
	}
	got, err := k.a.OpenSecret(sealed)
	if err != nil {
		t.Fatalf("OpenSecret by its worker: %v", err)
	}
	if !reflect.DeepEqual(got, secret()) {
		t.Fatalf("opened %+v, want %+v", got, secret())
	}

	// Sealed for a, opened by b.
	if _, err := k.b.OpenSecret(sealed); !errors.Is(err, envelope.ErrNotForMe) {
		t.Errorf("OpenSecret by another worker = %v, want ErrNotForMe", err)
	}
	// Sealed for a by a sender that is not the coordinator.
	impostor, err := envelope.NewCoordinator()
	if err != nil {
		t.Fatal(err)
	}
	forged, err := impostor.SealSecret(secret(), k.a.CurveKey())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := k.a.OpenSecret(forged); !errors.Is(err, envelope.ErrNotForMe) {
		t.Errorf("OpenSecret of a secret sealed by another sender = %v, want ErrNotForMe", err)
	}
	// One byte of the sealed box changed.
	changed := bytes.Clone(sealed)
	changed[len(changed)-1] ^= 1
	if _, err := k.a.OpenSecret(changed); !errors.Is(err, envelope.ErrNotForMe) {
		t.Errorf("OpenSecret of a changed box = %v, want ErrNotForMe", err)
	}
	if _, err := k.a.OpenSecret(nil); !errors.Is(err, envelope.ErrNotSealed) {
		t.Errorf("OpenSecret(nil) = %v, want ErrNotSealed", err)
	}
	if _, err := k.coord.SealSecret(secret(), "not-a-key"); err == nil {
		t.Error("SealSecret for a malformed key succeeded")
	}
}

// Seeds restore the same identity: what it signs and seals, a trust built
// from the public keys accepts.
func TestLoadCoordinator(t *testing.T) {
	t.Parallel()
	k := setup(t)
	signSeed, curveSeed := k.coord.Seeds()
	loaded, err := envelope.LoadCoordinator(signSeed, curveSeed)
	if err != nil {
		t.Fatal(err)
	}
	s1, c1 := k.coord.PublicKeys()
	s2, c2 := loaded.PublicKeys()
	if s1 != s2 || c1 != c2 {
		t.Fatalf("public keys %s %s, loaded %s %s", s1, c1, s2, c2)
	}
	data := []byte("task")
	sig, signer, err := loaded.Sign(data)
	if err != nil {
		t.Fatal(err)
	}
	if err := k.a.Verify(data, sig, signer); err != nil {
		t.Fatalf("Verify(signed by the loaded identity) = %v", err)
	}
	sealed, err := loaded.SealSecret(secret(), k.a.CurveKey())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := k.a.OpenSecret(sealed); err != nil {
		t.Fatalf("OpenSecret(sealed by the loaded identity) = %v", err)
	}

	user, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	userSeed, _ := user.Seed()
	for _, tt := range []struct{ name, sign, curve string }{
		{"garbage signing seed", "SAnope", curveSeed},
		{"user seed as signing seed", string(userSeed), curveSeed},
		{"garbage curve seed", signSeed, "SXnope"},
		{"signing seed as curve seed", signSeed, signSeed},
	} {
		if _, err := envelope.LoadCoordinator(tt.sign, tt.curve); err == nil {
			t.Errorf("%s: LoadCoordinator succeeded", tt.name)
		}
	}
}

func TestNewTrustRejectsBadKeys(t *testing.T) {
	t.Parallel()
	k := setup(t)
	sign, curve := k.coord.PublicKeys()
	worker, err := nkeys.CreateCurveKeys()
	if err != nil {
		t.Fatal(err)
	}
	seed, _ := worker.Seed()
	if _, err := envelope.NewTrust(sign, curve, string(seed)); err != nil {
		t.Fatalf("NewTrust: %v", err)
	}
	for _, tt := range []struct{ name, sign, curve, seed string }{
		{"curve key as signing key", curve, curve, string(seed)},
		{"signing key as curve key", sign, sign, string(seed)},
		{"public key as seed", sign, curve, curve},
		{"empty seed", sign, curve, ""},
	} {
		if _, err := envelope.NewTrust(tt.sign, tt.curve, tt.seed); err == nil {
			t.Errorf("%s: NewTrust succeeded", tt.name)
		}
	}
}
