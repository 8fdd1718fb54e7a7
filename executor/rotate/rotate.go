package rotate

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/postrotate/postrotate/executor"
	"github.com/postrotate/postrotate/executor/local"
	"github.com/postrotate/postrotate/executor/ssh"
)

// ErrNoRotation is returned for a job without a Rotation.
var ErrNoRotation = errors.New("job has no rotation")

// ErrUnknownKind is returned for a Rotation.Kind that is neither
// [executor.RotateLinux] nor [executor.RotatePostgreSQL].
var ErrUnknownKind = errors.New("unknown rotation kind")

// ErrInvalidLogin is returned for a Rotation.Login the resource cannot take:
// not a POSIX user name for Linux, empty, too long or holding a NUL for
// PostgreSQL.
var ErrInvalidLogin = errors.New("invalid login")

// ErrInvalidPassword is returned for a password the rotator cannot pass on
// safely (empty, a line break, a NUL, ...). Its message never holds the
// password.
var ErrInvalidPassword = errors.New("invalid password")

// ErrNoTarget is returned for a PostgreSQL rotation without a Target.
var ErrNoTarget = errors.New("no target: a postgresql rotation needs the server's address and admin login")

// ErrInvalidTarget is returned for a Target the rotator cannot use (no host,
// a bad CA certificate, ...).
var ErrInvalidTarget = errors.New("invalid target")

// ErrInvalidOption is returned by every Run of a Rotator built with a bad
// option.
var ErrInvalidOption = errors.New("invalid option")

// ErrUnsupported is returned for a rotation this worker cannot perform: a
// Linux password on this machine when the worker runs on Windows, a
// PostgreSQL server older than 10 (no SCRAM-SHA-256).
var ErrUnsupported = errors.New("not supported")

// DefaultSCRAMIterations is the iteration count of the SCRAM-SHA-256
// verifiers the PostgreSQL rotator computes: PostgreSQL's default
// (scram_iterations) and RFC 7677's minimum.
const DefaultSCRAMIterations = 4096

// Options configures a Rotator. A zero field means its default.
type Options struct {
	// SSH configures the SSH executor that runs the Linux rotator on a
	// Target.
	SSH ssh.Options
	// Local configures the local executor that runs the Linux rotator on
	// this machine, for a job without a Target.
	Local local.Options
	// ConnectTimeout bounds connecting and logging in to a PostgreSQL
	// server (each address it resolves to). Defaults to 10s.
	ConnectTimeout time.Duration
	// SCRAMIterations is the PBKDF2 iteration count of the SCRAM-SHA-256
	// verifiers set on PostgreSQL roles; at least 4096. Defaults to
	// [DefaultSCRAMIterations].
	SCRAMIterations int
}

// Rotator changes passwords with the built-in rotators: a Linux account's
// with chpasswd, a PostgreSQL role's with ALTER ROLE.
type Rotator struct {
	opts   Options
	optErr error // a bad option, returned by every Run
	ssh    *ssh.SSH
	local  *local.Local
}

var _ executor.Executor = (*Rotator)(nil)

// New returns a Rotator with opts' zero fields set to their defaults. Close
// it to close its SSH connections.
func New(opts Options) *Rotator {
	opts.ConnectTimeout = cmp.Or(opts.ConnectTimeout, 10*time.Second)
	opts.SCRAMIterations = cmp.Or(opts.SCRAMIterations, DefaultSCRAMIterations)
	r := &Rotator{opts: opts, ssh: ssh.New(opts.SSH), local: local.New(opts.Local)}
	switch {
	case opts.ConnectTimeout < 0:
		r.optErr = fmt.Errorf("option ConnectTimeout: %s is negative: %w", opts.ConnectTimeout, ErrInvalidOption)
	case opts.SCRAMIterations < DefaultSCRAMIterations:
		r.optErr = fmt.Errorf("option SCRAMIterations: %d is below %d: %w", opts.SCRAMIterations, DefaultSCRAMIterations, ErrInvalidOption)
	}
	return r
}

// Close closes the SSH connections the Rotator holds; runs in progress over
// them fail. Safe to call twice.
func (r *Rotator) Close() error {
	return r.ssh.Close()
}

// Run changes the password of job.Rotation.Login to its NewPassword on the
// resource: job.Target, or this machine for a Linux rotation without one.
//
// A change that failed on the resource (chpasswd's non-zero exit, an SQL
// error, a timeout) is a Result with a non-zero ExitCode and its Error set.
// Run returns an error, with a Result whose Error says the same, when the
// change certainly did not happen because it could not start (bad input or
// options, unreachable host, refused login), and when ctx is cancelled.
// Nothing it returns holds a secret: every text is masked with
// job.Masker().
func (r *Rotator) Run(ctx context.Context, job executor.Job) (executor.Result, error) {
	rot := job.Rotation
	switch {
	case rot == nil:
		return notStarted(job, executor.Result{}, fmt.Errorf("rotate: %w", ErrNoRotation))
	case r.optErr != nil:
		return notStarted(job, executor.Result{}, fmt.Errorf("rotate %s password: %w", rot.Kind, r.optErr))
	}
	switch rot.Kind {
	case executor.RotateLinux:
		return r.runLinux(ctx, job)
	case executor.RotatePostgreSQL:
		return r.runPostgreSQL(ctx, job)
	}
	return notStarted(job, executor.Result{}, fmt.Errorf("rotate: rotation.kind: %q (want %q or %q): %w",
		rot.Kind, executor.RotateLinux, executor.RotatePostgreSQL, ErrUnknownKind))
}

// notStarted completes res for a change that could not start, and returns
// it with err, both masked.
func notStarted(job executor.Job, res executor.Result, err error) (executor.Result, error) {
	mask := job.Masker()
	if res.StartedAt.IsZero() {
		res.StartedAt = time.Now()
	}
	res.FinishedAt = time.Now()
	res.ExitCode = -1
	res.Error = mask.Mask(err.Error())
	res.Command = mask.Mask(res.Command)
	return res, mask.MaskError(err)
}
