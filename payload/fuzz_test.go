package payload

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// FuzzDecode checks that Decode never panics, that every error wraps
// ErrMalformed, and that whatever Decode accepts, Encode writes back to bytes
// that Decode reads as the same Params, and that those bytes are canonical.
func FuzzDecode(f *testing.F) {
	stdins, _ := filepath.Glob(filepath.Join("testdata", "*.stdin"))
	for _, name := range stdins {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
		f.Add(bytes.TrimSuffix(b, []byte("\n")))
		f.Add(append(bytes.TrimSuffix(b, []byte("\n")), "\r\n"...))
		f.Add(b[:len(b)/2])
	}
	for _, s := range []string{
		"", "\n", "\r\n", "====", "e30=\n", "W10=\n",
		b64(`{"providerRecordUid":"","resourceRecordUid":"","userRecordUid":"u","newPassword":"n","oldPassword":"","user":"","records":"W10="}`),
		b64(`{"providerRecordUid":"","resourceRecordUid":"","userRecordUid":"u","newPassword":"\u00e9\ud83d\ude00","oldPassword":"","user":"","records":"` +
			b64(`[{"uid":"u","title":"t","x":[1,2.5e3,{"a":null}]}]`) + `"}`),
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		p, err := Decode(line)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error does not wrap ErrMalformed: %v", err)
			}
			return
		}
		enc, err := p.Encode()
		if err != nil {
			t.Fatalf("Decode accepted what Encode refuses: %v", err)
		}
		again, err := Decode(enc)
		if err != nil {
			t.Fatalf("Decode(Encode(p)): %v", err)
		}
		if again != p {
			t.Fatalf("round trip changed the params:\n got %+v\nwant %+v", again, p)
		}
		enc2, err := again.Encode()
		if err != nil || !bytes.Equal(enc, enc2) {
			t.Fatalf("Encode is not stable: %q vs %q (%v)", enc, enc2, err)
		}
		if _, err := p.RecordDicts(); err != nil {
			t.Fatalf("Decode accepted records that RecordDicts refuses: %v", err)
		}
	})
}
