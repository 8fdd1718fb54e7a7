// Package ssh runs post-rotation scripts on remote machines over SSH: the
// way a gateway reaches a machine that has no worker of its own.
//
// # A run
//
// [SSH.Run] logs in to Job.Target, then runs three commands, each on its
// own session of the same connection:
//
//  1. prepare: umask 077, a fresh private directory from mktemp -d (under
//     [Options.TempDir], else the login's $TMPDIR or /tmp), the script
//     written into it by cat from the session's stdin (never on a command
//     line), chmod 0700, and, on a connection's first job, uname -s for
//     Result.System;
//  2. the script: the login shell prints its pid on stderr (a marker line
//     with a random token, removed from the output), enters the directory
//     and execs env -i with a minimal environment — [Options.InheritEnv]
//     from the login environment, [Options.Env], TMPDIR, and
//     POSTROTATE_ROTATION_ID, POSTROTATE_STEP, POSTROTATE_ATTEMPT, set on
//     the command line since sshd refuses most Setenv requests — which
//     execs the interpreter chosen by
//     [github.com/postrotate/postrotate/executor.Argv]. The session's stdin
//     is exactly Job.Stdin then EOF. Its exit status, or the signal that
//     ended it, is the script's own: nothing stands between;
//  3. cleanup: rm -rf of the directory, whatever happened.
//
// The target's login shell must be a POSIX shell (sh, bash, dash, ksh,
// zsh) with env, mktemp, cat, chmod, rm, kill and sleep: Linux, macOS and
// the BSDs qualify; Windows targets are for WinRM.
//
// # Killing the process tree
//
// sshd makes each session's process the leader of a new session and
// process group, and the script keeps that process, so the group holds the
// script's whole tree. At the timeout, or when the context is cancelled, a
// separate session runs kill -TERM on the group, waits up to
// [Options.KillGrace] for it to go, then kill -KILL; the escalation runs on
// the target, so it completes even if the connection drops. That session
// takes no session slot, and when the server refuses it (its MaxSessions
// reached) it runs over a connection of its own. A process that left the
// group (setsid) is out of reach, as with the local executor.
//
// # Connections
//
// Jobs for the same host, port, login, credential and host key policy share
// one connection, dialled within [Options.DialTimeout] and probed with a
// keepalive@openssh.com request every [Options.KeepAlive]: a probe that
// fails or goes unanswered closes it. A job that finds its connection dead
// dials a new one, once. [Options.MaxSessionsPerHost] bounds the sessions
// open at once to a host; when the server refuses a session all the same,
// Run waits for one of its own on that connection to end. Connections
// unused for [Options.IdleTimeout] are closed; [SSH.Close] closes them all.
//
// # Trust
//
// The host key is checked against Target.KnownHosts (the content of an
// OpenSSH known_hosts file) or Target.HostKey (pinned keys in
// authorized_keys format); an unknown or changed key is refused with a
// [*HostKeyError] (errors.Is [ErrHostKey]) naming the host and the offered
// key's fingerprint, and a target with neither is refused before dialling
// ([ErrNoHostKey]). Target.InsecureIgnoreHostKey accepts any key: for tests
// and explicit trust on first use only. Login is with Target.PrivateKey
// (and Passphrase), then Target.Password (password and
// keyboard-interactive).
//
// Secrets never reach a command line, an error or a log: the script and the
// payload travel on stdin, and the Result is masked like the local
// executor's, the target's password, key and passphrase included.
package ssh
