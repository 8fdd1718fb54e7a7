package ssh

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"

	"github.com/postrotate/postrotate/executor"
	gossh "golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// ErrHostKey is the identity of every refused host key: errors.Is(err,
// ErrHostKey) holds for a [*HostKeyError] and for [ErrNoHostKey].
var ErrHostKey = errors.New("host key not trusted")

// ErrNoHostKey is returned when a target has neither KnownHosts nor HostKey
// and does not set InsecureIgnoreHostKey: the executor does not connect.
var ErrNoHostKey = fmt.Errorf("%w: no known_hosts or pinned host key configured", ErrHostKey)

// HostKeyError tells that the host key a server offered is not trusted.
type HostKeyError struct {
	// Host is the address dialled, host:port.
	Host string
	// KeyType and Fingerprint (SHA256:...) describe the key offered.
	KeyType     string
	Fingerprint string
	// Changed tells that other keys are trusted for the host (a pinned key,
	// or known_hosts lines): its key changed, or someone is in the middle.
	// False means the host is unknown to the known_hosts given.
	Changed bool
	// Err is the known_hosts verdict (a *knownhosts.KeyError or
	// *knownhosts.RevokedError), nil when only a pinned key was checked.
	Err error
}

func (e *HostKeyError) Error() string {
	what := "unknown host"
	if e.Changed {
		what = "host key mismatch"
	}
	var revoked *knownhosts.RevokedError
	if errors.As(e.Err, &revoked) {
		what = "revoked host key"
	}
	return fmt.Sprintf("%s: %s offered %s key %s", what, e.Host, e.KeyType, e.Fingerprint)
}

// Unwrap returns ErrHostKey and the known_hosts verdict.
func (e *HostKeyError) Unwrap() []error {
	if e.Err == nil {
		return []error{ErrHostKey}
	}
	return []error{ErrHostKey, e.Err}
}

// hostKeyCheck returns the host key callback for t dialled at addr and the
// host key algorithms to ask for: those of the trusted keys, so that a
// server holding several keys offers one that can be checked (nil: the
// defaults).
func hostKeyCheck(t *executor.Target, addr string) (gossh.HostKeyCallback, []string, error) {
	if t.InsecureIgnoreHostKey {
		return gossh.InsecureIgnoreHostKey(), nil, nil //nolint:gosec // documented: tests and trust on first use only
	}
	if strings.TrimSpace(t.KnownHosts) == "" && strings.TrimSpace(t.HostKey) == "" {
		return nil, nil, ErrNoHostKey
	}
	pinned, err := parsePinned(t.HostKey)
	if err != nil {
		return nil, nil, err
	}
	var known gossh.HostKeyCallback
	if strings.TrimSpace(t.KnownHosts) != "" {
		if known, err = parseKnownHosts(t.KnownHosts); err != nil {
			return nil, nil, err
		}
	}
	return checkHostKey(pinned, known), algorithms(hostKeyTypes(pinned, known, addr, t.KnownHosts)), nil
}

// hostKeyTypes returns the types of the trusted keys; nil when a host
// certificate may be offered.
func hostKeyTypes(pinned []gossh.PublicKey, known gossh.HostKeyCallback, addr, knownHosts string) []string {
	var types []string
	for _, k := range pinned {
		types = append(types, k.Type())
	}
	if known != nil {
		knownTypes, certs := knownTypes(known, addr, knownHosts)
		if certs {
			return nil // a host certificate may be offered: keep the defaults
		}
		types = append(types, knownTypes...)
	}
	return types
}

// checkHostKey returns the host key callback accepting a pinned key or,
// when known is not nil, a key known_hosts accepts.
func checkHostKey(pinned []gossh.PublicKey, known gossh.HostKeyCallback) gossh.HostKeyCallback {
	return func(hostname string, remote net.Addr, key gossh.PublicKey) error {
		for _, k := range pinned {
			if bytes.Equal(k.Marshal(), key.Marshal()) {
				return nil
			}
		}
		e := &HostKeyError{Host: hostname, KeyType: key.Type(), Fingerprint: gossh.FingerprintSHA256(key), Changed: len(pinned) > 0}
		if known != nil {
			err := known(hostname, remote, key)
			if err == nil {
				return nil
			}
			var keyErr *knownhosts.KeyError
			if errors.As(err, &keyErr) && len(keyErr.Want) > 0 {
				e.Changed = true
			}
			e.Err = err
		}
		return e
	}
}

// parsePinned parses pinned keys in authorized_keys format, one per line.
func parsePinned(text string) ([]gossh.PublicKey, error) {
	var keys []gossh.PublicKey
	rest := []byte(text)
	for len(bytes.TrimSpace(rest)) > 0 {
		key, _, _, r, err := gossh.ParseAuthorizedKey(rest)
		if err != nil {
			return nil, fmt.Errorf("parse pinned host key: %w", err)
		}
		keys = append(keys, key)
		rest = r
	}
	return keys, nil
}

// parseKnownHosts parses the content of a known_hosts file, through a
// private temporary file since knownhosts reads files.
func parseKnownHosts(text string) (gossh.HostKeyCallback, error) {
	f, err := os.CreateTemp("", "postrotate-known_hosts-")
	if err != nil {
		return nil, fmt.Errorf("write known_hosts: %w", err)
	}
	defer os.Remove(f.Name()) //nolint:errcheck // best effort
	_, err = f.WriteString(text)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("write known_hosts: %w", err)
	}
	cb, err := knownhosts.New(f.Name())
	if err != nil {
		// The message names the temporary file: say "known_hosts" instead.
		return nil, fmt.Errorf("parse known_hosts: %s", strings.ReplaceAll(err.Error(), f.Name(), "known_hosts"))
	}
	return cb, nil
}

// probeKey is a key no host has, to ask a known_hosts callback which keys
// it holds for a host.
var probeKey = sync.OnceValue(func() gossh.PublicKey {
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil
	}
	key, err := gossh.NewPublicKey(pub)
	if err != nil {
		return nil
	}
	return key
})

// knownTypes returns the types of the keys known_hosts holds for addr, and
// whether it holds certificate authorities (then any host key type may be
// used).
func knownTypes(known gossh.HostKeyCallback, addr, text string) (types []string, certs bool) {
	if strings.Contains(text, "@cert-authority") {
		return nil, true
	}
	probe := probeKey()
	if probe == nil {
		return nil, false
	}
	var keyErr *knownhosts.KeyError
	if err := known(addr, &net.TCPAddr{IP: net.IPv4zero}, probe); errors.As(err, &keyErr) {
		for _, k := range keyErr.Want {
			types = append(types, k.Key.Type())
		}
	}
	return types, false
}

// algorithms returns the host key algorithms that verify keys of types.
func algorithms(types []string) []string {
	var algos []string
	seen := map[string]bool{}
	add := func(a ...string) {
		for _, x := range a {
			if !seen[x] {
				seen[x] = true
				algos = append(algos, x)
			}
		}
	}
	for _, t := range types {
		switch t {
		case gossh.KeyAlgoRSA:
			add(gossh.KeyAlgoRSASHA512, gossh.KeyAlgoRSASHA256, gossh.KeyAlgoRSA)
		case gossh.CertAlgoRSAv01:
			add(gossh.CertAlgoRSASHA512v01, gossh.CertAlgoRSASHA256v01, gossh.CertAlgoRSAv01)
		default:
			add(t)
		}
	}
	return algos
}
