package vault

import (
	"bytes"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
)

func TestParseKey(t *testing.T) {
	t.Parallel()
	k := NewKey()
	tests := []struct {
		name  string
		input string
		ok    bool
	}{
		{"base64", k.String(), true},
		{"surrounding space", "  " + k.String() + "\n", true},
		{"empty", " \n", false},
		{"not base64", "this-is-not*base64!!" + strings.Repeat("x", 24), false},
		{"unpadded", strings.TrimRight(k.String(), "="), false},
		{"url alphabet", base64.URLEncoding.EncodeToString(bytes.Repeat([]byte{0xff}, 32)), false},
		{"16 bytes", base64.StdEncoding.EncodeToString(k[:16]), false},
		{"33 bytes", base64.StdEncoding.EncodeToString(append(k[:], 1)), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := ParseKey(tt.input)
			if tt.ok {
				if err != nil || got != k {
					t.Fatalf("ParseKey = %v, want the key", err)
				}
				return
			}
			if !errors.Is(err, ErrBadKey) {
				t.Fatalf("err = %v, want ErrBadKey", err)
			}
			if in := strings.TrimSpace(tt.input); in != "" && strings.Contains(err.Error(), in) {
				t.Fatalf("error echoes the input: %v", err)
			}
		})
	}
}

// unsetKeyEnv removes KeyEnv for the test (and restores it after).
func unsetKeyEnv(t *testing.T) {
	t.Setenv(KeyEnv, "")
	if err := os.Unsetenv(KeyEnv); err != nil {
		t.Fatal(err)
	}
}

func TestLoadKeyCreatesFile(t *testing.T) {
	unsetKeyEnv(t)
	path := filepath.Join(t.TempDir(), "data", "vault.key")

	k, source, created, err := LoadKey(path)
	if err != nil || !created || source != path {
		t.Fatalf("LoadKey = %v, %q, created %v", err, source, created)
	}
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if runtime.GOOS != "windows" {
		if perm := info.Mode().Perm(); perm != 0o600 {
			t.Errorf("key file mode = %04o, want 0600", perm)
		}
		dir, err := os.Stat(filepath.Dir(path))
		if err != nil {
			t.Fatal(err)
		}
		if perm := dir.Mode().Perm(); perm != 0o700 {
			t.Errorf("key dir mode = %04o, want 0700", perm)
		}
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(data) != k.String()+"\n" {
		t.Errorf("key file does not hold one base64 line of the key")
	}

	again, source, created, err := LoadKey(path)
	if err != nil || created || source != path || again != k {
		t.Fatalf("second LoadKey = %v, %q, created %v, same key %v", err, source, created, again == k)
	}
}

func TestLoadKeyEnvironmentWins(t *testing.T) {
	k := NewKey()
	t.Setenv(KeyEnv, k.String()+"\n")
	path := filepath.Join(t.TempDir(), "vault.key")
	got, source, created, err := LoadKey(path)
	if err != nil || got != k || created || source != "environment "+KeyEnv {
		t.Fatalf("LoadKey = %v, %q, created %v, env key %v", err, source, created, got == k)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("key file created although the environment holds the key: %v", err)
	}

	garbage := "Z2FyYmFnZS1rZXktbWF0ZXJpYWw=" // 21 bytes
	t.Setenv(KeyEnv, garbage)
	if _, _, _, err := LoadKey(path); !errors.Is(err, ErrBadKey) || strings.Contains(err.Error(), garbage) {
		t.Fatalf("garbage in %s: err = %v", KeyEnv, err)
	}
	t.Setenv(KeyEnv, "")
	if _, _, _, err := LoadKey(path); !errors.Is(err, ErrBadKey) {
		t.Fatalf("empty %s: err = %v", KeyEnv, err)
	}
}

func TestLoadKeyRefusesBadFiles(t *testing.T) {
	unsetKeyEnv(t)
	dir := t.TempDir()

	t.Run("group readable", func(t *testing.T) {
		if runtime.GOOS == "windows" {
			t.Skip("file permissions are not checked on Windows")
		}
		path := filepath.Join(dir, "open.key")
		if err := os.WriteFile(path, []byte(NewKey().String()+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(path, 0o644); err != nil {
			t.Fatal(err)
		}
		_, _, _, err := LoadKey(path)
		if err == nil || !strings.Contains(err.Error(), "chmod 600") {
			t.Fatalf("err = %v, want a refusal of the permissions", err)
		}
	})
	t.Run("garbage", func(t *testing.T) {
		path := filepath.Join(dir, "garbage.key")
		const garbage = "not a key, but maybe a password: Hunter2-Hunter2"
		if err := os.WriteFile(path, []byte(garbage), 0o600); err != nil {
			t.Fatal(err)
		}
		_, _, _, err := LoadKey(path)
		if !errors.Is(err, ErrBadKey) || strings.Contains(err.Error(), "Hunter2") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("directory", func(t *testing.T) {
		_, _, _, err := LoadKey(dir)
		if err == nil {
			t.Fatal("LoadKey of a directory succeeded")
		}
	})
	t.Run("no path", func(t *testing.T) {
		if _, _, _, err := LoadKey(""); err == nil {
			t.Fatal("LoadKey without environment or path succeeded")
		}
	})
}

func TestSealOpen(t *testing.T) {
	t.Parallel()
	k := NewKey()
	plain := []byte("Marker-Seal-Pw")
	aad := []byte("rec.svc-user")
	sealed := k.Seal(plain, aad)

	got, err := k.Open(sealed, aad)
	if err != nil || !bytes.Equal(got, plain) {
		t.Fatalf("Open = %q, %v", got, err)
	}
	if bytes.Contains(sealed, plain) {
		t.Fatal("sealed value holds the plaintext")
	}
	if again := k.Seal(plain, aad); bytes.Equal(again, sealed) || bytes.Equal(again[1:13], sealed[1:13]) {
		t.Fatal("two seals share their nonce")
	}

	t.Run("tampered", func(t *testing.T) {
		t.Parallel()
		for i := range sealed {
			bad := bytes.Clone(sealed)
			bad[i] ^= 0x01
			_, err := k.Open(bad, aad)
			if err == nil {
				t.Fatalf("byte %d altered: opened", i)
			}
			if i > 0 && !errors.Is(err, ErrWrongKey) {
				t.Fatalf("byte %d altered: err = %v, want ErrWrongKey", i, err)
			}
		}
	})
	t.Run("moved to another key", func(t *testing.T) {
		t.Parallel()
		if _, err := k.Open(sealed, []byte("rec.other")); !errors.Is(err, ErrWrongKey) {
			t.Fatalf("err = %v, want ErrWrongKey", err)
		}
	})
	t.Run("other key", func(t *testing.T) {
		t.Parallel()
		if _, err := NewKey().Open(sealed, aad); !errors.Is(err, ErrWrongKey) {
			t.Fatalf("err = %v, want ErrWrongKey", err)
		}
	})
	t.Run("truncated", func(t *testing.T) {
		t.Parallel()
		for _, n := range []int{0, 1, 13, len(sealed) - 1} {
			if _, err := k.Open(sealed[:n], aad); !errors.Is(err, ErrWrongKey) {
				t.Fatalf("%d bytes: err = %v, want ErrWrongKey", n, err)
			}
		}
	})
}

func TestSubKey(t *testing.T) {
	t.Parallel()
	k := NewKey()
	runs, store := k.SubKey("runs"), k.SubKey("jetstream")
	if runs != k.SubKey("runs") {
		t.Fatal("SubKey is not deterministic")
	}
	if runs == store || runs == k || store == k {
		t.Fatal("sub-keys are not distinct")
	}
	if NewKey().SubKey("runs") == runs {
		t.Fatal("sub-keys of two keys are equal")
	}
}

func TestKeyGoStringHidesKey(t *testing.T) {
	t.Parallel()
	k := NewKey()
	if s := k.GoString(); strings.Contains(s, k.String()) {
		t.Fatalf("GoString = %q", s)
	}
}

var parseKeyError = regexp.MustCompile(`^invalid vault key: (empty|not standard base64 \(want the base64 of 32 random bytes, e\.g\. from ` + "`openssl rand -base64 32`" + `\)|[0-9]+ bytes once decoded, want 32)$`)

func FuzzParseKey(f *testing.F) {
	f.Add(NewKey().String())
	f.Add("")
	f.Add("AAAA")
	f.Add("not base64 at all")
	f.Fuzz(func(t *testing.T, s string) {
		k, err := ParseKey(s)
		if err == nil {
			// The decoder skips line breaks.
			if k.String() != strings.NewReplacer("\r", "", "\n", "").Replace(strings.TrimSpace(s)) {
				t.Fatalf("accepted a non-canonical encoding")
			}
			return
		}
		// Errors are fixed texts: they cannot echo the input.
		if !parseKeyError.MatchString(err.Error()) {
			t.Fatalf("unexpected error text %q", err)
		}
	})
}

func FuzzOpen(f *testing.F) {
	k := Key{1, 2, 3}
	f.Add(k.Seal([]byte("value"), []byte("rec.a")))
	f.Add([]byte{})
	f.Add([]byte{sealVersion})
	f.Fuzz(func(t *testing.T, sealed []byte) {
		plain, err := k.Open(sealed, []byte("rec.a"))
		if err == nil && !bytes.Equal(plain, []byte("value")) {
			t.Fatalf("forged value opened: %q", plain)
		}
	})
}
