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
// # Implementations
//
//   - [github.com/postrotate/postrotate/executor/local] runs the script as a
//     local process.
//
// Each implementation runs the conformance suite in
// [github.com/postrotate/postrotate/executor/executortest].
//
// Executors return results; they never log.
package executor
