package vault

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
)

// Key is the vault key: an AES-256 key.
type Key [32]byte

// KeyEnv is the environment variable that holds the vault key, in standard
// base64 (with padding) of its 32 bytes. When set, LoadKey uses it and
// ignores the key file.
const KeyEnv = "POSTROTATE_VAULT_KEY"

// sealVersion is the first byte of every sealed value: the format of what
// follows (a 96-bit random nonce, then AES-256-GCM ciphertext and tag).
const sealVersion byte = 1

// maxKeyFileSize bounds what LoadKey reads from a key file.
const maxKeyFileSize = 4 << 10

// Errors.
var (
	// ErrWrongKey is returned when a sealed value fails authentication: it
	// was sealed with another key, or altered, or moved to another KV key;
	// and by Open when the key is not the record store's.
	ErrWrongKey = errors.New("wrong vault key")
	// ErrBadKey is returned by ParseKey and LoadKey for a key that is not
	// standard base64 of 32 bytes.
	ErrBadKey = errors.New("invalid vault key")
)

// ParseKey parses a key in standard base64, ignoring surrounding space. Its
// errors wrap ErrBadKey and never contain the input.
func ParseKey(s string) (Key, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return Key{}, fmt.Errorf("%w: empty", ErrBadKey)
	}
	b, err := base64.StdEncoding.Strict().DecodeString(s)
	if err != nil {
		// The decoder's error carries an offset only, but say nothing of
		// the input anyway.
		return Key{}, fmt.Errorf("%w: not standard base64 (want the base64 of 32 random bytes, e.g. from `openssl rand -base64 32`)", ErrBadKey)
	}
	if len(b) != len(Key{}) {
		return Key{}, fmt.Errorf("%w: %d bytes once decoded, want %d", ErrBadKey, len(b), len(Key{}))
	}
	return Key(b), nil
}

// NewKey returns a random key.
func NewKey() Key {
	var k Key
	_, _ = rand.Read(k[:]) // never fails
	return k
}

// String returns the key in standard base64, the form KeyEnv and the key
// file hold. It is the secret itself: never log it.
func (k Key) String() string { return base64.StdEncoding.EncodeToString(k[:]) }

// GoString hides the key from %#v.
func (k Key) GoString() string { return "vault.Key{…}" }

// LoadKey returns the key from $POSTROTATE_VAULT_KEY when that is set, else
// from the file at path. When the file does not exist, LoadKey creates it
// with a random key (one base64 line, mode 0600, missing parent directories
// 0700) and reports created, so that the caller tells the user to back it
// up: without the key, the record store cannot be read.
//
// source says where the key came from: "environment POSTROTATE_VAULT_KEY" or
// the path. An empty $POSTROTATE_VAULT_KEY is an error, not a fallback to the
// file. Outside Windows, a key file that its group or others may access is
// refused, as ssh refuses a private key. Errors never contain key material.
func LoadKey(path string) (k Key, source string, created bool, err error) {
	if v, ok := os.LookupEnv(KeyEnv); ok {
		source = "environment " + KeyEnv
		if strings.TrimSpace(v) == "" {
			return Key{}, source, false, fmt.Errorf("%w: %s is set but empty", ErrBadKey, KeyEnv)
		}
		k, err := ParseKey(v)
		if err != nil {
			return Key{}, source, false, fmt.Errorf("%s: %w", KeyEnv, err)
		}
		return k, source, false, nil
	}
	if path == "" {
		return Key{}, "", false, fmt.Errorf("no vault key: set %s or give a key file", KeyEnv)
	}
	source = path
	k, err = readKeyFile(path)
	if !errors.Is(err, fs.ErrNotExist) {
		return k, source, false, err
	}
	k, err = createKeyFile(path)
	if errors.Is(err, fs.ErrExist) {
		// Created by another process meanwhile.
		k, err = readKeyFile(path)
		return k, source, false, err
	}
	if err != nil {
		return Key{}, source, false, err
	}
	return k, source, true, nil
}

func readKeyFile(path string) (Key, error) {
	f, err := os.Open(path)
	if err != nil {
		return Key{}, fmt.Errorf("read vault key file: %w", err)
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return Key{}, fmt.Errorf("read vault key file: %w", err)
	}
	if !info.Mode().IsRegular() {
		return Key{}, fmt.Errorf("vault key file %s: not a regular file", path)
	}
	if perm := info.Mode().Perm(); perm&0o077 != 0 && runtime.GOOS != "windows" {
		return Key{}, fmt.Errorf("vault key file %s: permissions %04o are too open: it must be accessible by its owner only (chmod 600 %s)", path, perm, path)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxKeyFileSize+1))
	if err != nil {
		return Key{}, fmt.Errorf("read vault key file: %w", err)
	}
	if len(data) > maxKeyFileSize {
		return Key{}, fmt.Errorf("vault key file %s: %w: file too large", path, ErrBadKey)
	}
	k, err := ParseKey(string(data))
	if err != nil {
		return Key{}, fmt.Errorf("vault key file %s: %w", path, err)
	}
	return k, nil
}

// createKeyFile writes a new random key to path, which must not exist.
func createKeyFile(path string) (Key, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return Key{}, fmt.Errorf("create vault key file: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return Key{}, fmt.Errorf("create vault key file: %w", err)
	}
	k := NewKey()
	_, werr := f.WriteString(k.String() + "\n")
	if werr == nil {
		werr = f.Sync()
	}
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		_ = os.Remove(path)
		return Key{}, fmt.Errorf("create vault key file: %w", werr)
	}
	return k, nil
}

// aead returns AES-256-GCM with random 96-bit nonces under k.
func (k Key) aead() cipher.AEAD {
	block, err := aes.NewCipher(k[:])
	if err != nil {
		panic("vault: aes: " + err.Error()) // a 32-byte key is always valid
	}
	a, err := cipher.NewGCMWithRandomNonce(block)
	if err != nil {
		panic("vault: gcm: " + err.Error()) // an AES block is always valid
	}
	return a
}

// Seal encrypts and authenticates plaintext with AES-256-GCM under a random
// 96-bit nonce, binding aad (in the store: the KV key, so that a value moved
// to another key does not open). The result is a version byte, the nonce,
// the ciphertext and the tag.
func (k Key) Seal(plaintext, aad []byte) []byte {
	a := k.aead()
	out := make([]byte, 1, 1+len(plaintext)+a.Overhead())
	out[0] = sealVersion
	return a.Seal(out, nil, plaintext, sealAAD(aad))
}

// Open authenticates and decrypts a value made by Seal with the same key and
// aad. A value that fails authentication (another key, another aad, altered
// or truncated) gives an error wrapping ErrWrongKey.
func (k Key) Open(sealed, aad []byte) ([]byte, error) {
	if len(sealed) == 0 {
		return nil, fmt.Errorf("open sealed value: empty: %w", ErrWrongKey)
	}
	if sealed[0] != sealVersion {
		return nil, fmt.Errorf("open sealed value: unknown format version %d (want %d): written by a newer postrotate, or not a sealed value", sealed[0], sealVersion)
	}
	a := k.aead()
	if len(sealed)-1 < a.Overhead() {
		return nil, fmt.Errorf("open sealed value: truncated: %w", ErrWrongKey)
	}
	plain, err := a.Open(nil, nil, sealed[1:], sealAAD(aad))
	if err != nil {
		return nil, fmt.Errorf("open sealed value: %w (or the value was altered, or moved from another KV key)", ErrWrongKey)
	}
	return plain, nil
}

// sealAAD binds the format version to the caller's additional data.
func sealAAD(aad []byte) []byte {
	return append([]byte{sealVersion}, aad...)
}

// SubKey derives from k an independent key for another use, named by label
// (HKDF-SHA256, no salt, info = label): e.g. SubKey("runs") to seal the runs
// bucket's secrets. Different labels give unrelated keys; the store itself
// uses k.
func (k Key) SubKey(label string) Key {
	b, err := hkdf.Key(sha256.New, k[:], nil, label, len(Key{}))
	if err != nil {
		panic("vault: hkdf: " + err.Error()) // 32 bytes is far below HKDF's limit
	}
	return Key(b)
}
