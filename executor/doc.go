// Package executor defines how postrotate runs one post-rotation script, and
// the pieces every way of running one shares.
//
// # The contract
//
// An [Executor] runs a [Job] to completion and returns a [Result]. A script
// that exits non-zero, or is killed at its timeout, is a Result, not an
// error: Run returns an error only when the script could not be started at
// all, or when its context was cancelled (the process tree is killed first
// and the Result holds what was captured).
//
// Every executor honours the script contract of the design brief: the
// payload line on stdin then EOF, the interpreter rules of [Argv], the
// PowerShell bootstrap for .ps1 scripts ([PowerShellBootstrap]), output
// capped per stream with head and tail kept ([Output]), and every secret,
// in every form [payload.SecretVariants] knows, replaced by "********"
// ([Masker]) in stdout, stderr, Result.Error and Result.Command.
//
// # The run skeleton
//
// The executors that run a script share one skeleton, [ScriptRun]: prepare
// the script (a failure is [ScriptRun.NotStarted]), start it with the
// capped Stdout and Stderr writers, then [ScriptRun.Wait] for the started
// [Process] within the job's timeout, kill its process tree at the timeout
// or a cancellation, and build the Result with the output masked. Each
// executor implements Process over its own way of running a script.
//
// # Implementations
//
//   - [github.com/postrotate/postrotate/executor/local] runs the script as a
//     local process.
//   - [github.com/postrotate/postrotate/executor/ssh] runs it on a machine
//     over SSH.
//   - [github.com/postrotate/postrotate/executor/winrm] runs it on a Windows
//     machine over WinRM.
//   - [github.com/postrotate/postrotate/executor/http] sends a declarative
//     HTTP request instead of running a script.
//   - [github.com/postrotate/postrotate/executor/rotate] changes a password
//     with a built-in rotator.
//
// Each executor that runs scripts (local, SSH, WinRM) runs the conformance
// suite in [github.com/postrotate/postrotate/executor/executortest].
//
// Executors return results; they never log.
package executor
