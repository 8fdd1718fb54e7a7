package envelope_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/nats-io/nkeys"

	"github.com/postrotate/postrotate/messages"
	"github.com/postrotate/postrotate/messages/envelope"
)

// Fixed test identities, so that the committed corpus entries (signed
// messages, sealed secrets) stay valid. They protect nothing.
const (
	fuzzSignSeed   = "SAAOVHVJDBC5BXNEVEDQRFJFH3F5OZCFT6VQKMXIBVNMDWQTIZQB7BMYEI"
	fuzzCurveSeed  = "SXANLY6A2QXDSSR7TW7EYWTISTJJUD4YP7HSEEHKD6ECB4UWKZHCDHGAJM"
	fuzzWorkerSeed = "SXADYFVHV7MZMUMZ44POXBECQOK7P5BIIIF5G62R2OQTBNBTNNPFJSOZ7I"
	fuzzOtherSeed  = "SXAJEALJBC5SR65Y4YAYVTGCS6GQ2QTOMCEKQPW4SEBTF2OTAP5YXZAUKQ"
)

// Markers held by the seeded secrets: no error may show one.
var fuzzMarkers = []string{"Mk-0ld-S3cret-4e1f", "Mk-N3w-S3cret-77b0", "Mk-Adm1n-S3cret-c2"}

var fuzzSecret = messages.TaskSecret{
	Stdin:       []byte("eyJuZXdQYXNzd29yZCI6Ik1rLU4zdy1TM2NyZXQtNzdiMCJ9\n"),
	Mask:        []string{"Mk-0ld-S3cret-4e1f", "Mk-N3w-S3cret-77b0"},
	Credential:  &messages.Credential{Login: "root", Password: "Mk-Adm1n-S3cret-c2", PrivateKey: "Mk-Adm1n-S3cret-c2", Passphrase: "Mk-Adm1n-S3cret-c2"},
	NewPassword: "Mk-N3w-S3cret-77b0",
	OldPassword: "Mk-0ld-S3cret-4e1f",
}

// fuzzIdentities returns the coordinator and the trust of its worker.
func fuzzIdentities(tb testing.TB) (*envelope.Coordinator, *envelope.Trust) {
	tb.Helper()
	c, err := envelope.LoadCoordinator(fuzzSignSeed, fuzzCurveSeed)
	if err != nil {
		tb.Fatal(err)
	}
	sign, curve := c.PublicKeys()
	trust, err := envelope.NewTrust(sign, curve, fuzzWorkerSeed)
	if err != nil {
		tb.Fatal(err)
	}
	return c, trust
}

// FuzzVerify checks Trust.Verify on arbitrary messages and headers: it
// never panics, refuses with one of its errors, accepts only a message the
// coordinator signed, and always accepts the coordinator's own signature
// of the message (and never the same signature for another message).
func FuzzVerify(f *testing.F) {
	c, trust := fuzzIdentities(f)
	signed := map[string]bool{}
	other, err := nkeys.CreateAccount()
	if err != nil {
		f.Fatal(err)
	}
	otherPub, _ := other.PublicKey()
	for _, data := range [][]byte{
		[]byte(`{"schema_version":1,"id":"t-1","rotation_id":"r-1","step":1,"host":"gw","runner":"local"}`),
		{}, {0}, bytes.Repeat([]byte("x"), 300),
	} {
		sig, signer, err := c.Sign(data)
		if err != nil {
			f.Fatal(err)
		}
		signed[string(data)] = true
		f.Add(data, sig, signer)
		f.Add(append(bytes.Clone(data), ' '), sig, signer)
		f.Add(data, sig+"A", signer)
		f.Add(data, sig[:len(sig)-1], signer)
		f.Add(data, base64.StdEncoding.EncodeToString([]byte(sig)), signer)
		f.Add(data, "", "")
		f.Add(data, sig, "")
		f.Add(data, "", signer)
		raw, _ := other.Sign(data)
		f.Add(data, base64.RawURLEncoding.EncodeToString(raw), otherPub)
		f.Add(data, base64.RawURLEncoding.EncodeToString(raw), signer)
	}
	f.Fuzz(func(t *testing.T, data []byte, signature, signer string) {
		err := trust.Verify(data, signature, signer)
		switch {
		case err == nil:
			if !signed[string(data)] {
				t.Fatalf("accepted a message the coordinator did not sign: %q", data)
			}
		case !errors.Is(err, envelope.ErrUnsigned) && !errors.Is(err, envelope.ErrUnknownSigner) && !errors.Is(err, envelope.ErrBadSignature):
			t.Fatalf("unexpected error: %v", err)
		}
		if err != nil && len(signature) > 8 && strings.Contains(err.Error(), signature) {
			t.Fatalf("error repeats the signature: %v", err)
		}
		sig, pub, err := c.Sign(data)
		if err != nil {
			t.Fatal(err)
		}
		if err := trust.Verify(data, sig, pub); err != nil {
			t.Fatalf("refused the coordinator's signature: %v", err)
		}
		changed := append(bytes.Clone(data), 0)
		if len(data) > 0 {
			changed = bytes.Clone(data)
			changed[len(data)/2] ^= 1
		}
		if err := trust.Verify(changed, sig, pub); !errors.Is(err, envelope.ErrBadSignature) {
			t.Fatalf("a message changed by one byte: %v, want ErrBadSignature", err)
		}
	})
}

// FuzzOpenSecret checks Trust.OpenSecret on arbitrary bytes: it never
// panics and opens only a secret the coordinator sealed for this worker,
// unchanged. It also seals arbitrary plaintext with the coordinator's key
// (as a coordinator with a bug would): opening it never panics, and errors
// never show the secret's values.
func FuzzOpenSecret(f *testing.F) {
	c, trust := fuzzIdentities(f)
	sealed, err := c.SealSecret(fuzzSecret, trust.CurveKey())
	if err != nil {
		f.Fatal(err)
	}
	plain, err := json.Marshal(fuzzSecret)
	if err != nil {
		f.Fatal(err)
	}
	otherWorker, err := nkeys.FromCurveSeed([]byte(fuzzOtherSeed))
	if err != nil {
		f.Fatal(err)
	}
	otherPub, _ := otherWorker.PublicKey()
	forOther, err := c.SealSecret(fuzzSecret, otherPub)
	if err != nil {
		f.Fatal(err)
	}
	// Sealed by another sender for this worker.
	fromOther, err := otherWorker.Seal(plain, trust.CurveKey())
	if err != nil {
		f.Fatal(err)
	}
	coordCurve, err := nkeys.FromCurveSeed([]byte(fuzzCurveSeed))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(sealed, plain)
	f.Add(forOther, []byte(`{"stdin":"Mk-0ld-S3cret-4e1f"}`))
	f.Add(fromOther, []byte(`{"mask":"Mk-0ld-S3cret-4e1f"}`))
	f.Add(sealed[:len(sealed)-1], []byte(`{"credential":{"password":["Mk-Adm1n-S3cret-c2"]}}`))
	f.Add(append(bytes.Clone(sealed), 0), []byte(`{"new_password":{"Mk-N3w-S3cret-77b0":1}}`))
	f.Add([]byte{}, []byte(`{"new_password":"Mk-N3w-S3cret-77b0"`))
	f.Add([]byte("xkv1"), []byte(`["Mk-0ld-S3cret-4e1f"]`))
	f.Add(bytes.ToUpper(sealed), []byte(`"Mk-0ld-S3cret-4e1f"`))
	f.Fuzz(func(t *testing.T, data, plaintext []byte) {
		s, err := trust.OpenSecret(data)
		switch {
		case err == nil:
			if !reflect.DeepEqual(s, fuzzSecret) {
				t.Fatalf("opened a secret the coordinator did not seal: %+v", s)
			}
		case errors.Is(err, envelope.ErrNotSealed) || errors.Is(err, envelope.ErrNotForMe):
		default:
			// Only the coordinator's own box opens, and it holds fuzzSecret.
			t.Fatalf("unexpected error: %v", err)
		}

		box, err := coordCurve.Seal(plaintext, trust.CurveKey())
		if err != nil {
			t.Fatal(err)
		}
		s, err = trust.OpenSecret(box)
		if err != nil {
			if errors.Is(err, envelope.ErrNotForMe) || errors.Is(err, envelope.ErrNotSealed) {
				t.Fatalf("the coordinator's box was not opened: %v", err)
			}
			for _, m := range fuzzMarkers {
				if strings.Contains(err.Error(), m) {
					t.Fatalf("error shows a secret (%q): %v", m, err)
				}
			}
			return
		}
		again, err := c.SealSecret(s, trust.CurveKey())
		if err != nil {
			t.Fatalf("seal an opened secret: %v", err)
		}
		s2, err := trust.OpenSecret(again)
		if err != nil || !reflect.DeepEqual(s2, s) {
			t.Fatalf("round trip: %v\n got %+v\nwant %+v", err, s2, s)
		}
	})
}
