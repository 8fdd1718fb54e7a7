// Package rotate holds postrotate's built-in rotators: they change the
// password of an account on a resource, where other steps run scripts. A
// [Rotator] implements [github.com/postrotate/postrotate/executor.Executor]; a
// worker registers it under the runner "rotate". It runs the job's
// [github.com/postrotate/postrotate/executor.Rotation]: it sets the
// password of Rotation.Login to Rotation.NewPassword (a rollback is the
// same job with the passwords swapped).
//
// # Linux
//
// [github.com/postrotate/postrotate/executor.RotateLinux] sets a Linux
// account's password with chpasswd. With a Job.Target it runs over SSH, as
// the target's admin login, with the SSH executor
// ([github.com/postrotate/postrotate/executor/ssh]: strict host key
// checking, pooled connections, the process tree killed at the timeout);
// without one, on the machine the worker runs on, as the worker's user,
// with the local executor
// ([github.com/postrotate/postrotate/executor/local]; not on Windows, where
// Run returns an error wrapping [ErrUnsupported]).
//
// Either way the same fixed /bin/sh script runs, and its stdin carries the
// secrets: first a line with the admin login's password (Target.Password,
// or an empty line), then the "login:password" line for chpasswd. The
// script
//
//   - runs chpasswd itself when its user is root (id -u is 0);
//   - else, when sudo -n chpasswd is allowed (a NOPASSWD rule; probed with
//     no input, so chpasswd changes nothing), runs sudo -n chpasswd;
//   - else, when there is an admin password, runs sudo -S chpasswd (with
//     -k and an empty prompt) with that password as the first line: sudo
//     reads one line, chpasswd the rest. The password is first tried alone, so that after
//     a wrong one sudo has nothing more to read: it never takes the
//     "login:password" line for a second try.
//
// A sudoers rule as narrow as
//
//	admin ALL=(root) /usr/sbin/chpasswd
//
// is enough (add NOPASSWD: for a login with a key and no password); sudo
// must not require a terminal (no requiretty).
// Rotation.Login must be a POSIX user name (letters, digits, '.', '_',
// '-', not starting with '-'); the new password and the admin password,
// each a line of the script's stdin, may not hold a line break or a NUL
// (a ':' is fine). Anything else is refused with [ErrInvalidLogin] or
// [ErrInvalidPassword] before anything runs.
//
// # PostgreSQL
//
// [github.com/postrotate/postrotate/executor.RotatePostgreSQL] connects
// with pgx (from the worker) to Target.Host:Target.Port (5432 by default)
// as Target.Login with Target.Password, to Rotation.Database ("postgres"
// by default), with libpq's Rotation.SSLMode ("prefer" by default;
// Target.CACert, when set, is the roots that verify-ca and verify-full
// check the server's certificate with, and turns require into verify-ca as
// libpq does), and runs
//
//	ALTER ROLE "login" PASSWORD 'SCRAM-SHA-256$4096:<salt>$<StoredKey>:<ServerKey>'
//
// with the login quoted as an identifier and a SCRAM-SHA-256 verifier
// (RFC 5803) computed here: a random 16-byte salt, PBKDF2-HMAC-SHA-256
// with [Options.SCRAMIterations] (4096) iterations. As with psql's
// \password, the plaintext password never reaches the server, so neither
// its statement log (log_statement = 'all') nor pg_stat_activity can show
// it; the server stores the verifier whatever its password_encryption.
// The admin needs CREATEROLE (on PostgreSQL 16 and later, with the ADMIN
// option on the role) or superuser; the server must be PostgreSQL 10 or
// later, older ones are refused ([ErrUnsupported]) as they would take the
// verifier for a password. The worker's PG* environment variables and
// ~/.postgresql files apply, as with libpq, to what the rotation does not
// set; a password file does not.
//
// SASLprep, which PostgreSQL and its clients apply to a password before
// SCRAM, is not implemented: ASCII passwords, which it never changes, are
// used as they are, and so are the other passwords it leaves unchanged. A
// password it would change (a non-ASCII space, an invisible character,
// text not in Unicode normalization form KC) is refused with
// [ErrInvalidPassword] rather than risk a verifier no client matches.
//
// # Results
//
// A changed password is a Result with ExitCode 0 and a one-line Stdout,
// e.g. "password of svc changed on 10.0.0.5:5432 (postgresql)". A change
// the resource refused is a Result with a non-zero ExitCode (chpasswd's or
// sudo's exit status; 1 for an SQL error) and Error saying what failed,
// the server's message included; a timeout is a Result with TimedOut set.
// Run returns an error only when the change certainly did not happen
// because it could not start (bad options or input, unreachable host,
// refused login; the error names the host:port), and when its context is
// cancelled. Result.Command is "chpasswd" or `ALTER ROLE "login"`;
// Result.System is "Linux" for a Linux rotation and the worker's system
// for PostgreSQL.
//
// # Secrets
//
// The new, old and admin passwords, the private key and its passphrase
// never appear on a command line (the script receives them on stdin and
// passes them on with the shell's builtin printf, or by inheriting its
// stdin), in an SQL statement (only the verifier is), or in an error or a
// Result: everything is masked with the job's
// [github.com/postrotate/postrotate/executor.Job.Masker], and the
// verifier is masked too. Like every executor, a Rotator returns results
// and does not log.
package rotate
