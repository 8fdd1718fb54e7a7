// Package envelope signs and seals tasks between the coordinator and the
// workers (DESIGN §7).
//
// The coordinator signs every task message with its ed25519 nkey (an
// account key, "A..."): the signature covers the message data — the whole
// task, with its unique id and its expiry — and travels in the
// HeaderSignature header, the signer's public key in HeaderSigner. The
// task's secret part (messages.TaskSecret: stdin, credentials, passwords)
// is sealed to the target worker's X25519 curve key ("X...") with the
// coordinator's curve key as the sender, and travels as
// messages.Task.SealedSecret: only that worker can open it, and only a
// payload from the coordinator opens.
//
// A worker holds a Trust: the coordinator's two public keys and its own
// curve seed. It refuses a message that is unsigned, signed by another
// key, or changed by one byte, and a payload sealed for another worker.
package envelope

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/nats-io/nkeys"

	"github.com/postrotate/postrotate/messages"
)

// Headers of a signed task message.
const (
	// HeaderSignature is the base64 (raw URL encoding) ed25519 signature of
	// the message data.
	HeaderSignature = "Postrotate-Signature"
	// HeaderSigner is the signer's public key.
	HeaderSigner = "Postrotate-Signer"
)

// Errors of Verify and OpenSecret. A refused task's result says which.
var (
	ErrUnsigned      = errors.New("task is not signed")
	ErrUnknownSigner = errors.New("task is signed by a key that is not the coordinator's")
	ErrBadSignature  = errors.New("task signature does not match its content")
	ErrNotSealed     = errors.New("task secret is not sealed")
	ErrNotForMe      = errors.New("task secret is not sealed for this worker by the coordinator")
)

// Coordinator is the coordinator's identity: it signs tasks and seals their
// secrets.
type Coordinator struct {
	sign  nkeys.KeyPair
	curve nkeys.KeyPair
}

// NewCoordinator creates a fresh identity.
func NewCoordinator() (*Coordinator, error) {
	sign, err := nkeys.CreateAccount()
	if err != nil {
		return nil, fmt.Errorf("create signing key: %w", err)
	}
	curve, err := nkeys.CreateCurveKeys()
	if err != nil {
		return nil, fmt.Errorf("create curve key: %w", err)
	}
	return &Coordinator{sign: sign, curve: curve}, nil
}

// LoadCoordinator restores an identity from its seeds ("SA..." and
// "SX...").
func LoadCoordinator(signSeed, curveSeed string) (*Coordinator, error) {
	sign, err := nkeys.FromSeed([]byte(signSeed))
	if err != nil {
		return nil, fmt.Errorf("coordinator signing seed: %w", err)
	}
	if pub, _ := sign.PublicKey(); !nkeys.IsValidPublicAccountKey(pub) {
		return nil, errors.New("coordinator signing seed: not an account seed (SA...)")
	}
	curve, err := nkeys.FromCurveSeed([]byte(curveSeed))
	if err != nil {
		return nil, fmt.Errorf("coordinator curve seed: %w", err)
	}
	return &Coordinator{sign: sign, curve: curve}, nil
}

// Seeds returns the identity's seeds, to be stored as secrets.
func (c *Coordinator) Seeds() (signSeed, curveSeed string) {
	s, _ := c.sign.Seed()
	x, _ := c.curve.Seed()
	return string(s), string(x)
}

// PublicKeys returns the public signing key ("A...") and curve key
// ("X...") workers trust.
func (c *Coordinator) PublicKeys() (sign, curve string) {
	sign, _ = c.sign.PublicKey()
	curve, _ = c.curve.PublicKey()
	return sign, curve
}

// Sign returns the HeaderSignature and HeaderSigner values for data.
func (c *Coordinator) Sign(data []byte) (signature, signer string, err error) {
	sig, err := c.sign.Sign(data)
	if err != nil {
		return "", "", fmt.Errorf("sign task: %w", err)
	}
	signer, _ = c.sign.PublicKey()
	return base64.RawURLEncoding.EncodeToString(sig), signer, nil
}

// Verify checks that data was signed by this coordinator, with the errors
// of Trust.Verify: the coordinator's own check of a task message it finds
// in the queue.
func (c *Coordinator) Verify(data []byte, signature, signer string) error {
	pub, _ := c.sign.PublicKey()
	switch {
	case signature == "" && signer == "":
		return ErrUnsigned
	case signer != pub:
		return ErrUnknownSigner
	}
	sig, err := base64.RawURLEncoding.DecodeString(signature)
	if err != nil || c.sign.Verify(data, sig) != nil {
		return ErrBadSignature
	}
	return nil
}

// SealSecret seals s for the worker whose curve public key is worker.
func (c *Coordinator) SealSecret(s messages.TaskSecret, worker string) ([]byte, error) {
	plain, err := json.Marshal(s)
	if err != nil {
		return nil, fmt.Errorf("encode task secret: %w", err)
	}
	sealed, err := c.curve.Seal(plain, worker)
	if err != nil {
		return nil, fmt.Errorf("seal task secret for %s: %w", worker, err)
	}
	return sealed, nil
}

// EphemeralTrust returns the Trust of a worker with a fresh curve key, for
// this coordinator: what one-shot mode gives its in-process workers, whose
// keys live as long as the process. Seal their secrets for its CurveKey.
func (c *Coordinator) EphemeralTrust() (*Trust, error) {
	curve, err := nkeys.CreateCurveKeys()
	if err != nil {
		return nil, fmt.Errorf("create worker curve key: %w", err)
	}
	seed, err := curve.Seed()
	if err != nil {
		return nil, fmt.Errorf("worker curve seed: %w", err)
	}
	sign, sender := c.PublicKeys()
	return NewTrust(sign, sender, string(seed))
}

// Trust is what a worker knows to accept tasks: the coordinator's public
// keys and its own curve key.
type Trust struct {
	signer string        // "A..."
	verify nkeys.KeyPair // signer's public key
	sender string        // "X..."
	curve  nkeys.KeyPair
}

// NewTrust returns the trust of a worker whose curve seed is curveSeed
// ("SX..."), for the coordinator with public keys signKey ("A...") and
// curveKey ("X...").
func NewTrust(signKey, curveKey, curveSeed string) (*Trust, error) {
	if !nkeys.IsValidPublicAccountKey(signKey) {
		return nil, errors.New("coordinator signing key: not a public account key (A...)")
	}
	if !nkeys.IsValidPublicCurveKey(curveKey) {
		return nil, errors.New("coordinator curve key: not a public curve key (X...)")
	}
	verify, err := nkeys.FromPublicKey(signKey)
	if err != nil {
		return nil, fmt.Errorf("coordinator signing key: %w", err)
	}
	curve, err := nkeys.FromCurveSeed([]byte(curveSeed))
	if err != nil {
		return nil, fmt.Errorf("worker curve seed: %w", err)
	}
	return &Trust{signer: signKey, verify: verify, sender: curveKey, curve: curve}, nil
}

// CurveKey returns the worker's public curve key ("X..."), which the
// coordinator seals payloads for.
func (t *Trust) CurveKey() string {
	k, _ := t.curve.PublicKey()
	return k
}

// Verify checks the signature headers of data: it returns ErrUnsigned
// without them, ErrUnknownSigner when the signer is not the coordinator,
// ErrBadSignature when the signature does not match data.
func (t *Trust) Verify(data []byte, signature, signer string) error {
	switch {
	case signature == "" && signer == "":
		return ErrUnsigned
	case signer != t.signer:
		return ErrUnknownSigner
	}
	sig, err := base64.RawURLEncoding.DecodeString(signature)
	if err != nil {
		return ErrBadSignature
	}
	if t.verify.Verify(data, sig) != nil {
		return ErrBadSignature
	}
	return nil
}

// OpenSecret opens a task secret sealed for this worker by the
// coordinator: ErrNotSealed when there is none, ErrNotForMe when it was
// sealed for another key or by another sender, or was changed.
func (t *Trust) OpenSecret(sealed []byte) (messages.TaskSecret, error) {
	if len(sealed) == 0 {
		return messages.TaskSecret{}, ErrNotSealed
	}
	plain, err := t.curve.Open(sealed, t.sender)
	if err != nil {
		return messages.TaskSecret{}, ErrNotForMe
	}
	var s messages.TaskSecret
	if err := json.Unmarshal(plain, &s); err != nil {
		// The decoder's error may quote the secret: say only what failed.
		return messages.TaskSecret{}, fmt.Errorf("%w: the opened secret does not decode", messages.ErrInvalidTask)
	}
	return s, nil
}
