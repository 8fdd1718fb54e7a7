package ssh

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/postrotate/postrotate/executor"
	gossh "golang.org/x/crypto/ssh"
)

// ErrNoCredential is returned for a target with neither a Password nor a
// PrivateKey.
var ErrNoCredential = errors.New("no password or private key to log in with")

// ErrNoLogin is returned for a target without a Login.
var ErrNoLogin = errors.New("no login")

// ErrNoTarget is returned for a job without a Target.
var ErrNoTarget = errors.New("job has no target")

// clientConfig returns the client configuration that logs in to t at addr.
func clientConfig(t *executor.Target, addr string, timeout time.Duration) (*gossh.ClientConfig, error) {
	if t.Login == "" {
		return nil, ErrNoLogin
	}
	auth, err := authMethods(t)
	if err != nil {
		return nil, err
	}
	check, algos, err := hostKeyCheck(t, addr)
	if err != nil {
		return nil, err
	}
	return &gossh.ClientConfig{
		User:              t.Login,
		Auth:              auth,
		HostKeyCallback:   check,
		HostKeyAlgorithms: algos,
		Timeout:           timeout,
	}, nil
}

// authMethods returns public key auth with the PrivateKey, then password
// and keyboard-interactive auth with the Password, for those the target
// has.
func authMethods(t *executor.Target) ([]gossh.AuthMethod, error) {
	var methods []gossh.AuthMethod
	if t.PrivateKey != "" {
		signer, err := gossh.ParsePrivateKey([]byte(t.PrivateKey))
		var missing *gossh.PassphraseMissingError
		if errors.As(err, &missing) && t.Passphrase != "" {
			signer, err = gossh.ParsePrivateKeyWithPassphrase([]byte(t.PrivateKey), []byte(t.Passphrase))
		}
		if err != nil {
			return nil, fmt.Errorf("parse private key: %w", err)
		}
		methods = append(methods, gossh.PublicKeys(signer))
	}
	if t.Password != "" {
		password := t.Password
		methods = append(methods,
			gossh.Password(password),
			gossh.KeyboardInteractive(func(_, _ string, questions []string, echos []bool) ([]string, error) {
				// The password answers the hidden prompts ("Password:");
				// a prompt that echoes is not asking for it.
				answers := make([]string, len(questions))
				for i := range questions {
					if echos[i] {
						return nil, fmt.Errorf("keyboard-interactive: unexpected prompt %q", questions[i])
					}
					answers[i] = password
				}
				return answers, nil
			}),
		)
	}
	if len(methods) == 0 {
		return nil, ErrNoCredential
	}
	return methods, nil
}

// poolKey identifies the connections a target may share: same address,
// login, credential and host key policy. The secrets only enter it hashed.
func poolKey(t *executor.Target, addr string) string {
	h := sha256.New()
	insecure := strconv.FormatBool(t.InsecureIgnoreHostKey)
	for _, s := range []string{addr, t.Login, t.Password, t.PrivateKey, t.Passphrase, t.KnownHosts, t.HostKey, insecure} {
		h.Write([]byte(strconv.Itoa(len(s)) + ":" + s))
	}
	return addr + "|" + t.Login + "|" + hex.EncodeToString(h.Sum(nil))
}
