package rotate

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/postrotate/postrotate/executor"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// TestSCRAMVerifierRFC7677 checks the verifier against the exchange of RFC
// 7677 §3 (user "user", password "pencil"): the server's signature made
// with ServerKey, and the client's proof checked with StoredKey as a
// server does.
func TestSCRAMVerifierRFC7677(t *testing.T) {
	t.Parallel()
	salt, _ := base64.StdEncoding.DecodeString("W22ZaJ0SNY7soEsUEjb6gQ==")
	v, err := scramVerifierWithSalt("pencil", salt, 4096)
	if err != nil {
		t.Fatal(err)
	}
	head, keys, ok := strings.Cut(strings.TrimPrefix(v, "SCRAM-SHA-256$"), "$")
	stored64, server64, ok2 := strings.Cut(keys, ":")
	if !strings.HasPrefix(v, "SCRAM-SHA-256$") || !ok || !ok2 || head != "4096:W22ZaJ0SNY7soEsUEjb6gQ==" {
		t.Fatalf("verifier %q: want SCRAM-SHA-256$4096:<salt>$<StoredKey>:<ServerKey>", v)
	}
	storedKey, _ := base64.StdEncoding.DecodeString(stored64)
	serverKey, _ := base64.StdEncoding.DecodeString(server64)

	const (
		clientFirstBare = "n=user,r=rOprNGfwEbeRWgbNEkqO"
		serverFirst     = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
		clientFinalBare = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
		proof64         = "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
		serverSig64     = "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
	)
	authMessage := clientFirstBare + "," + serverFirst + "," + clientFinalBare
	if got := base64.StdEncoding.EncodeToString(hmacSHA256(serverKey, authMessage)); got != serverSig64 {
		t.Errorf("server signature %s, want %s", got, serverSig64)
	}
	proof, _ := base64.StdEncoding.DecodeString(proof64)
	clientSig := hmacSHA256(storedKey, authMessage)
	clientKey := make([]byte, len(proof))
	for i := range proof {
		clientKey[i] = proof[i] ^ clientSig[i]
	}
	if sum := sha256.Sum256(clientKey); !hmac.Equal(sum[:], storedKey) {
		t.Errorf("the RFC's client proof does not match StoredKey %s", stored64)
	}
}

func TestSCRAMVerifierSalt(t *testing.T) {
	t.Parallel()
	a, err := scramVerifier("same password", DefaultSCRAMIterations)
	if err != nil {
		t.Fatal(err)
	}
	b, err := scramVerifier("same password", DefaultSCRAMIterations)
	if err != nil {
		t.Fatal(err)
	}
	salt, _, _ := strings.Cut(strings.TrimPrefix(a, "SCRAM-SHA-256$4096:"), "$")
	if raw, err := base64.StdEncoding.DecodeString(salt); err != nil || len(raw) != 16 {
		t.Errorf("salt %q: want 16 bytes in base64 (%v)", salt, err)
	}
	if a == b {
		t.Errorf("two verifiers of one password are equal: the salt is not random")
	}
}

func TestCheckUserName(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		login string
		ok    bool
	}{
		{"svc", true},
		{"svc-app", true},
		{"svc_app.2", true},
		{"_apt", true},
		{"Admin", true},
		{"1000", true},
		{strings.Repeat("a", 255), true},
		{"", false},
		{"-svc", false},
		{"svc:x", false},
		{"svc\n", false},
		{"svc\nroot", false},
		{"a b", false},
		{"svc$", false},
		{"été", false},
		{"svc/..", false},
		{".", false},
		{"..", false},
		{"svc\x00", false},
		{strings.Repeat("a", 256), false},
	} {
		err := checkUserName("rotation.login", tc.login)
		switch {
		case tc.ok && err != nil:
			t.Errorf("%q: %v", tc.login, err)
		case !tc.ok && !errors.Is(err, ErrInvalidLogin):
			t.Errorf("%q: got %v, want ErrInvalidLogin", tc.login, err)
		case !tc.ok && !strings.HasPrefix(err.Error(), "rotation.login: "):
			t.Errorf("%q: error %q does not name rotation.login", tc.login, err)
		}
	}
}

func TestCheckRoleName(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		role string
		ok   bool
	}{
		{"svc", true},
		{`svc-app "quoted"`, true},
		{"Rôle", true},
		{strings.Repeat("r", 63), true},
		{"", false},
		{strings.Repeat("r", 64), false},
		{"svc\x00", false},
	} {
		if err := checkRoleName("rotation.login", tc.role); tc.ok != (err == nil) || (!tc.ok && !errors.Is(err, ErrInvalidLogin)) {
			t.Errorf("%q: got %v, want ok %v", tc.role, err, tc.ok)
		}
	}
}

func TestCheckPGPassword(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, password string
		ok             bool
	}{
		{"ascii", `p@ss w0rd:'"\`, true},
		{"ascii control", "a\tb\x7f", true},
		{"composed", "caf\u00e9-p\u00e4ss", true},
		{"cjk", "密码123", true},
		{"invalid utf-8", "a\xffb", true},
		{"empty", "", false},
		{"nul", "a\x00b", false},
		{"decomposed", "cafe\u0301", false},
		{"ligature", "\ufb01sh", false},
		{"no-break space", "a\u00a0b", false},
		{"soft hyphen", "a\u00adb", false},
		{"zero width space", "a\u200bb", false},
	} {
		err := checkPGPassword(tc.password)
		if tc.ok != (err == nil) || (!tc.ok && !errors.Is(err, ErrInvalidPassword)) {
			t.Errorf("%s: got %v, want ok %v", tc.name, err, tc.ok)
		}
		if err != nil && tc.password != "" && strings.Contains(err.Error(), tc.password) {
			t.Errorf("%s: error %q holds the password", tc.name, err)
		}
	}
}

func TestCheckServerVersion(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		version string
		ok      bool
	}{
		{"15.14 (Debian 15.14-0+deb12u1)", true},
		{"10.23", true},
		{"17beta1", true},
		{"9.6.24", false},
		{"", false},
		{"x", false},
	} {
		if err := checkServerVersion(tc.version); tc.ok != (err == nil) || (!tc.ok && !errors.Is(err, ErrUnsupported)) {
			t.Errorf("%q: got %v, want ok %v", tc.version, err, tc.ok)
		}
	}
}

// TestRunRefuses checks the jobs refused before anything runs: an error
// naming the bad value, the same in the Result, and no secret in either.
func TestRunRefuses(t *testing.T) {
	t.Parallel()
	const (
		newPassword = "New-Secret-1"
		oldPassword = "Old-Secret-1"
		adminPW     = "Admin-Secret-1"
	)
	linux := func(login, password string) *executor.Rotation {
		return &executor.Rotation{Kind: executor.RotateLinux, Login: login, NewPassword: password, OldPassword: oldPassword}
	}
	pg := func(login, password string) *executor.Rotation {
		return &executor.Rotation{Kind: executor.RotatePostgreSQL, Login: login, NewPassword: password, OldPassword: oldPassword}
	}
	pgTarget := &executor.Target{Host: "127.0.0.1", Port: 1, Login: "admin", Password: adminPW}
	for _, tc := range []struct {
		name     string
		opts     Options
		rotation *executor.Rotation
		target   *executor.Target
		want     error
		path     string // in the error
	}{
		{"no rotation", Options{}, nil, nil, ErrNoRotation, ""},
		{"unknown kind", Options{}, &executor.Rotation{Kind: "mysql", Login: "svc", NewPassword: newPassword}, nil, ErrUnknownKind, "rotation.kind"},
		{"iterations", Options{SCRAMIterations: 1000}, pg("svc", newPassword), pgTarget, ErrInvalidOption, "SCRAMIterations"},
		{"linux login colon", Options{}, linux("svc:root", newPassword), nil, ErrInvalidLogin, "rotation.login"},
		{"linux login newline", Options{}, linux("svc\nroot", newPassword), nil, ErrInvalidLogin, "rotation.login"},
		{"linux login dash", Options{}, linux("-svc", newPassword), nil, ErrInvalidLogin, "rotation.login"},
		{"linux login empty", Options{}, linux("", newPassword), nil, ErrInvalidLogin, "rotation.login"},
		{"linux password newline", Options{}, linux("svc", newPassword+"\nroot:x"), nil, ErrInvalidPassword, "rotation.new_password"},
		{"linux password cr", Options{}, linux("svc", newPassword+"\r"), nil, ErrInvalidPassword, "rotation.new_password"},
		{"linux password nul", Options{}, linux("svc", newPassword+"\x00"), nil, ErrInvalidPassword, "rotation.new_password"},
		{"linux password empty", Options{}, linux("svc", ""), nil, ErrInvalidPassword, "rotation.new_password"},
		{"linux sudo password newline", Options{}, linux("svc", newPassword),
			&executor.Target{Host: "127.0.0.1", Port: 1, Login: "admin", Password: adminPW + "\nx"}, ErrInvalidPassword, "target.password"},
		{"pg no target", Options{}, pg("svc", newPassword), nil, ErrNoTarget, ""},
		{"pg role too long", Options{}, pg(strings.Repeat("r", 64), newPassword), pgTarget, ErrInvalidLogin, "rotation.login"},
		{"pg password not normalized", Options{}, pg("svc", "cafe\u0301"+newPassword), pgTarget, ErrInvalidPassword, "rotation.new_password"},
		{"pg sslmode", Options{}, &executor.Rotation{Kind: executor.RotatePostgreSQL, Login: "svc", NewPassword: newPassword, SSLMode: "always"},
			pgTarget, ErrInvalidTarget, "rotation.sslmode"},
		{"pg ca cert", Options{}, &executor.Rotation{Kind: executor.RotatePostgreSQL, Login: "svc", NewPassword: newPassword, SSLMode: "verify-full"},
			&executor.Target{Host: "db.example", Login: "admin", Password: adminPW, CACert: "not a certificate"}, ErrInvalidTarget, "target.ca_cert"},
		{"pg unix socket host", Options{}, pg("svc", newPassword), &executor.Target{Host: "/run/postgresql", Login: "admin"}, ErrInvalidTarget, "target.host"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := New(tc.opts)
			defer r.Close() //nolint:errcheck // nothing to report
			job := executor.Job{RotationID: "rot-1", Rotation: tc.rotation, Target: tc.target}
			res, err := r.Run(context.Background(), job)
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			if !strings.Contains(err.Error(), tc.path) {
				t.Errorf("error %q does not name %s", err, tc.path)
			}
			if res.Error != err.Error() || res.ExitCode != -1 || res.Success() {
				t.Errorf("result %+v: want exit -1 and the error", res)
			}
			for _, secret := range []string{newPassword, oldPassword, adminPW} {
				if strings.Contains(err.Error(), secret) || strings.Contains(fmt.Sprintf("%+v", res), secret) {
					t.Errorf("secret %q in error %q or result %+v", secret, err, res)
				}
			}
		})
	}
}
