package executor

import (
	"context"
	"strconv"
	"strings"
	"time"
)

// Executor runs one script to completion. A non-zero exit is a Result, not an error.
type Executor interface {
	Run(ctx context.Context, job Job) (Result, error)
}

// DefaultTimeout is how long a script may run when its Timeout is zero.
const DefaultTimeout = 5 * time.Minute

// DefaultOutputLimit is how many bytes of each output stream are kept when a
// Job's OutputLimit is zero.
const DefaultOutputLimit = 1 << 20 // per stream

// Script is the script to run and how to run it.
type Script struct {
	// Name is the script's file name, e.g. "notify.sh". Only its base name is
	// used; its extension drives the interpreter rules of [Argv].
	Name string
	// Content is the script's text.
	Content []byte
	// Command is the interpreter prefix, e.g. "python3" or
	// "/usr/bin/env python3 -u", split on whitespace. Empty means the rules
	// of [Argv].
	Command string
	// Timeout bounds the script's run. Defaults to [DefaultTimeout].
	Timeout time.Duration
}

// Job is one run of a script.
type Job struct {
	RotationID string
	Step       int
	Attempt    int
	Script     Script
	// Stdin is exactly the bytes the script reads on stdin: the payload line
	// including its "\n". EOF follows.
	Stdin []byte
	// Secrets are raw secret values. They, their [payload.SecretVariants],
	// and the Stdin line itself are masked in everything a Result carries.
	Secrets []string
	// OutputLimit is how many bytes of each stream are kept. Defaults to
	// [DefaultOutputLimit].
	OutputLimit int
	// Target is the machine a remote executor (SSH, WinRM) runs the script
	// on; nil for local and HTTP jobs.
	Target *Target
	// Request is the declarative request of an HTTP job; nil otherwise.
	Request *Request
	// Rotation is what a built-in rotator job changes; nil otherwise. Its
	// Target is the resource (nil: this machine).
	Rotation *Rotation
}

// Rotation kinds: the built-in rotators.
const (
	// RotateLinux sets a Linux account's password with chpasswd, on Target
	// over SSH or, without a Target, on the machine the worker runs on;
	// through sudo when the admin login is not root.
	RotateLinux = "linux"
	// RotatePostgreSQL sets a PostgreSQL role's password (ALTER ROLE), as
	// the Target's admin login.
	RotatePostgreSQL = "postgresql"
)

// Rotation is a password change performed by a built-in rotator: the
// "general" rotation of a PAM User on its resource, or its rollback (the
// same with the passwords swapped).
type Rotation struct {
	// Kind is RotateLinux or RotatePostgreSQL.
	Kind string
	// Login is the account (Linux user, PostgreSQL role) whose password
	// changes.
	Login string
	// NewPassword is the password to set; OldPassword the one it has now.
	// Both are secrets, masked in the Result.
	NewPassword string
	OldPassword string
	// Database is the database a PostgreSQL rotator connects to. Defaults
	// to "postgres".
	Database string
	// SSLMode is libpq's sslmode for PostgreSQL: disable, allow, prefer,
	// require, verify-ca or verify-full (with Target.CACert as the roots
	// when set). Defaults to "prefer".
	SSLMode string
}

// Secrets returns the rotation's secret values.
func (r *Rotation) Secrets() []string {
	if r == nil {
		return nil
	}
	return []string{r.NewPassword, r.OldPassword}
}

// Target is a remote machine and the admin credential to log in with. The
// Password, PrivateKey and Passphrase are secrets: an executor adds them to
// what it masks.
type Target struct {
	Host  string
	Port  int  // defaults: 22 for SSH, 5985 (5986 with HTTPS) for WinRM
	HTTPS bool // WinRM over HTTPS
	Login string
	// Password logs in (SSH password auth, WinRM NTLM/Basic).
	Password string
	// PrivateKey is a PEM private key for SSH public key auth, with its
	// Passphrase when encrypted.
	PrivateKey string
	Passphrase string
	// KnownHosts is the content of an OpenSSH known_hosts file that must
	// hold the machine's host key; HostKey is a pinned key in
	// authorized_keys format. One of them is required for SSH unless
	// InsecureIgnoreHostKey is set.
	KnownHosts string
	HostKey    string
	// InsecureIgnoreHostKey accepts any SSH host key or WinRM HTTPS
	// certificate. For tests and explicit trust-on-first-use only.
	InsecureIgnoreHostKey bool
	// CACert is a PEM CA bundle that must sign a WinRM HTTPS certificate;
	// empty means the system roots.
	CACert string
}

// Secrets returns the target's secret values.
func (t *Target) Secrets() []string {
	if t == nil {
		return nil
	}
	return []string{t.Password, t.PrivateKey, t.Passphrase}
}

// Request is a declarative HTTP request. URL, header values and Body are Go
// templates over the payload: {{.NewPassword}}, {{.OldPassword}}, {{.User}},
// {{.UserRecordUID}}, {{record "Title" "field"}}.
type Request struct {
	Method  string
	URL     string
	Headers map[string]string
	Body    string
	// ExpectStatus lists the statuses that mean success; empty means any 2xx.
	ExpectStatus []int
}

// EffectiveTimeout is the job's script timeout with the default applied.
func (j Job) EffectiveTimeout() time.Duration {
	if j.Script.Timeout <= 0 {
		return DefaultTimeout
	}
	return j.Script.Timeout
}

// EffectiveOutputLimit is the job's per-stream output limit with the default
// applied.
func (j Job) EffectiveOutputLimit() int {
	if j.OutputLimit <= 0 {
		return DefaultOutputLimit
	}
	return j.OutputLimit
}

// Masker returns the masker for everything the job's Result carries: the
// Secrets, their variants, and the Stdin line (without its line ending).
func (j Job) Masker() *Masker {
	secrets := append(append(append([]string(nil), j.Secrets...), j.Target.Secrets()...), j.Rotation.Secrets()...)
	line := strings.TrimSuffix(strings.TrimSuffix(string(j.Stdin), "\n"), "\r")
	if line != "" {
		secrets = append(secrets, line)
	}
	return NewMasker(secrets...)
}

// Env returns the POSTROTATE_ROTATION_ID, POSTROTATE_STEP and
// POSTROTATE_ATTEMPT variables, as KEY=VALUE, that every script sees.
func (j Job) Env() []string {
	return []string{
		"POSTROTATE_ROTATION_ID=" + j.RotationID,
		"POSTROTATE_STEP=" + strconv.Itoa(j.Step),
		"POSTROTATE_ATTEMPT=" + strconv.Itoa(j.Attempt),
	}
}

// Result is what one run of a script produced.
type Result struct {
	// Command is what was run: interpreter and script path. It never holds
	// the payload.
	Command string
	// System is "Linux", "Windows" or "Darwin" (see [System]).
	System string
	// ExitCode is the script's exit status; -1 when the process did not exit
	// by itself (killed, not started).
	ExitCode int
	// Stdout and Stderr are masked and capped to the job's OutputLimit.
	Stdout, Stderr string
	// StdoutTruncated and StderrTruncated tell that the middle of a stream
	// was dropped.
	StdoutTruncated bool
	StderrTruncated bool
	// StartedAt and FinishedAt bound the script's run; for a script that
	// could not start (an unreachable target, a refused login), they bound
	// the attempt, so that a connection timeout shows in the duration.
	StartedAt  time.Time
	FinishedAt time.Time
	// TimedOut tells that the script was killed at its timeout.
	TimedOut bool
	// Error says why the script did not complete normally, e.g.
	// "timed out after 2s: process tree killed"; "" otherwise. Masked.
	Error string
}

// Success reports whether the script completed normally with exit status 0.
func (r Result) Success() bool { return r.Error == "" && r.ExitCode == 0 }

// System returns the Result.System name of a GOOS value: "Linux", "Windows",
// "Darwin"; other systems get their GOOS with an upper-case first letter.
func System(goos string) string {
	switch goos {
	case "linux", "android":
		return "Linux"
	case "windows":
		return "Windows"
	case "darwin", "ios":
		return "Darwin"
	case "freebsd":
		return "FreeBSD"
	case "openbsd":
		return "OpenBSD"
	case "netbsd":
		return "NetBSD"
	case "":
		return ""
	}
	return strings.ToUpper(goos[:1]) + goos[1:]
}

// Wait waits until done is closed, timeout has passed or ctx is done, and
// reports which ended the wait: neither when done was closed (also when it
// was closed at the very moment the timeout fired), timedOut, or canceled.
func Wait(ctx context.Context, done <-chan struct{}, timeout time.Duration) (timedOut, canceled bool) {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case <-done:
		return false, false
	case <-timer.C:
		select {
		case <-done: // finished at the very moment
			return false, false
		default:
			return true, false
		}
	case <-ctx.Done():
		return false, true
	}
}

// KillNote says, for a Result.Error, how killing a timed-out or cancelled
// script's process tree went.
func KillNote(killErr error) string {
	if killErr != nil {
		return "kill process tree: " + killErr.Error()
	}
	return "process tree killed"
}
