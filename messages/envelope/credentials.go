package envelope

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/nats-io/nkeys"

	"github.com/postrotate/postrotate/messages"
)

// Credentials is a worker's enrolment: what `postrotate worker add HOST`
// writes into one file (mode 0600) and `postrotate-worker --creds FILE`
// reads. It holds the worker's two seeds — its NATS nkey user, which the
// broker grants the rights of this host only, and its curve key, which
// opens the payloads sealed for it — and the coordinator's public keys,
// which it trusts.
type Credentials struct {
	// Host is the host id whose tasks the worker runs.
	Host string `json:"host"`
	// NATS is the URL(s) of the NATS servers, comma separated; optional.
	NATS string `json:"nats,omitempty"`
	// UserSeed is the seed of the worker's NATS nkey user ("SU...").
	UserSeed string `json:"user_seed"`
	// CurveSeed is the seed of the worker's curve key ("SX...").
	CurveSeed string `json:"curve_seed"`
	// CoordinatorSigningKey is the public key tasks are signed with
	// ("A...").
	CoordinatorSigningKey string `json:"coordinator_signing_key"`
	// CoordinatorCurveKey is the coordinator's public curve key ("X..."),
	// the sender of sealed payloads.
	CoordinatorCurveKey string `json:"coordinator_curve_key"`
	// InboxPrefix is the prefix of the worker's reply subjects
	// (InboxPrefix(Host)): its NATS user may subscribe only under it.
	InboxPrefix string `json:"inbox_prefix"`
	// Prefix is the subject prefix. Empty means messages.DefaultPrefix.
	Prefix string `json:"prefix,omitempty"`
}

// ErrCredentialsExposed is returned by ReadCredentials for a file that its
// group or others may access.
var ErrCredentialsExposed = errors.New("credentials file is accessible by others than its owner")

// ErrInvalidCredentials is wrapped by the errors of a credentials file
// that does not decode or lacks a field. They name the field, never a seed.
var ErrInvalidCredentials = errors.New("invalid credentials")

// maxCredentialsSize bounds what ReadCredentials reads.
const maxCredentialsSize = 64 << 10

// InboxPrefix is the inbox prefix of the worker of host: "_INBOX_" and the
// host's token. A worker's NATS user may subscribe under it only, so that
// no worker receives another's replies.
func InboxPrefix(host string) string { return "_INBOX_" + messages.HostToken(host) }

// Validate checks that every field is present and well-formed. Its errors
// wrap ErrInvalidCredentials and name the field, never a seed.
func (c Credentials) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalidCredentials, fmt.Sprintf(format, args...))
	}
	switch {
	case c.Host == "":
		return bad("host is empty")
	case !validSeed(c.UserSeed, nkeys.PrefixByteUser):
		return bad("user_seed is not an nkey user seed (SU...)")
	case !validCurveSeed(c.CurveSeed):
		return bad("curve_seed is not a curve seed (SX...)")
	case !nkeys.IsValidPublicAccountKey(c.CoordinatorSigningKey):
		return bad("coordinator_signing_key is not a public account key (A...)")
	case !nkeys.IsValidPublicCurveKey(c.CoordinatorCurveKey):
		return bad("coordinator_curve_key is not a public curve key (X...)")
	case c.InboxPrefix != InboxPrefix(c.Host):
		return bad("inbox_prefix is not %q, the inbox prefix of host %q", InboxPrefix(c.Host), c.Host)
	case strings.ContainsAny(c.Prefix, " \t\r\n*>"):
		return bad("prefix %q is not a subject prefix", c.Prefix)
	}
	return nil
}

func validSeed(seed string, role nkeys.PrefixByte) bool {
	p, _, err := nkeys.DecodeSeed([]byte(seed))
	return err == nil && p == role
}

func validCurveSeed(seed string) bool {
	_, err := nkeys.FromCurveSeed([]byte(seed))
	return err == nil
}

// User returns the worker's NATS nkey user.
func (c Credentials) User() (nkeys.KeyPair, error) {
	kp, err := nkeys.FromSeed([]byte(c.UserSeed))
	if err != nil {
		return nil, fmt.Errorf("%w: user_seed: %w", ErrInvalidCredentials, err)
	}
	return kp, nil
}

// Trust returns what the worker needs to accept tasks: the coordinator's
// public keys and its own curve key.
func (c Credentials) Trust() (*Trust, error) {
	return NewTrust(c.CoordinatorSigningKey, c.CoordinatorCurveKey, c.CurveSeed)
}

// DecodeCredentials parses and validates the content of a credentials file.
// Unknown fields are refused, so that a misspelt one is not ignored.
func DecodeCredentials(data []byte) (Credentials, error) {
	var c Credentials
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		// The decoder's error may quote the content: say only where.
		var se *json.SyntaxError
		var te *json.UnmarshalTypeError
		switch {
		case errors.As(err, &se):
			return Credentials{}, fmt.Errorf("%w: not JSON (at byte %d)", ErrInvalidCredentials, se.Offset)
		case errors.As(err, &te):
			return Credentials{}, fmt.Errorf("%w: field %s has the wrong type", ErrInvalidCredentials, te.Field)
		case strings.HasPrefix(err.Error(), "json: unknown field"):
			return Credentials{}, fmt.Errorf("%w: %s", ErrInvalidCredentials, strings.TrimPrefix(err.Error(), "json: "))
		}
		return Credentials{}, fmt.Errorf("%w: not a JSON object", ErrInvalidCredentials)
	}
	if dec.More() {
		return Credentials{}, fmt.Errorf("%w: more than one JSON object", ErrInvalidCredentials)
	}
	if err := c.Validate(); err != nil {
		return Credentials{}, err
	}
	return c, nil
}

// ReadCredentials reads and validates the credentials file at path. Outside
// Windows, a file that its group or others may access is refused with an
// error wrapping ErrCredentialsExposed, as ssh refuses a private key.
func ReadCredentials(path string) (Credentials, error) {
	f, err := os.Open(path)
	if err != nil {
		return Credentials{}, fmt.Errorf("read credentials: %w", err)
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return Credentials{}, fmt.Errorf("read credentials: %w", err)
	}
	if !info.Mode().IsRegular() {
		return Credentials{}, fmt.Errorf("credentials %s: not a regular file", path)
	}
	if perm := info.Mode().Perm(); perm&0o077 != 0 && runtime.GOOS != "windows" {
		return Credentials{}, fmt.Errorf("credentials %s: %w: permissions %04o, want 0600 (chmod 600 %s)", path, ErrCredentialsExposed, perm, path)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxCredentialsSize+1))
	if err != nil {
		return Credentials{}, fmt.Errorf("read credentials: %w", err)
	}
	if len(data) > maxCredentialsSize {
		return Credentials{}, fmt.Errorf("credentials %s: %w: file too large", path, ErrInvalidCredentials)
	}
	c, err := DecodeCredentials(data)
	if err != nil {
		return Credentials{}, fmt.Errorf("credentials %s: %w", path, err)
	}
	return c, nil
}

// Encode returns the credentials as the indented JSON of a credentials
// file.
func (c Credentials) Encode() ([]byte, error) {
	data, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode credentials: %w", err)
	}
	return append(data, '\n'), nil
}

// WriteCredentials writes c to path with mode 0600, replacing the file
// atomically (a new file renamed over it), so that a reader never sees a
// partial file and an existing file's looser mode is not kept.
func WriteCredentials(path string, c Credentials) error {
	if err := c.Validate(); err != nil {
		return err
	}
	data, err := c.Encode()
	if err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write credentials: %w", err)
	}
	tmp := f.Name()
	ok := false
	defer func() {
		if !ok {
			_ = f.Close()
			_ = os.Remove(tmp)
		}
	}()
	// CreateTemp makes the file 0600; Chmod says so where umask or the
	// platform might differ.
	if err := f.Chmod(0o600); err != nil && runtime.GOOS != "windows" {
		return fmt.Errorf("write credentials: %w", err)
	}
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("write credentials: %w", err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("write credentials: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write credentials: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write credentials: %w", err)
	}
	ok = true
	return nil
}
