// Package winrm runs post-rotation scripts on remote Windows machines over
// WinRM (WS-Management): the way a gateway reaches a Windows machine that
// has no worker of its own.
//
// # A run
//
// [WinRM.Run] logs in to Job.Target (NTLMv2 by default, Basic as an
// option; HTTP on port 5985 or HTTPS on 5986), opens one shell and starts
// one command in it:
//
//	powershell.exe -NoLogo -NoProfile -NonInteractive -ExecutionPolicy Bypass -Command -
//
// PowerShell reading its commands from stdin. Neither the script nor any
// secret is ever on that command line, nor on any other: everything travels
// over the command's stdin, sent in chunks that fit the envelope size
// ([Options.EnvelopeSize]). The stdin holds:
//
//  1. a loader line, which reads the lines that follow as a program and runs
//     it as one script block (each line is prefixed by "#", so that
//     PowerShell would take it for a comment if it ever read it itself);
//  2. the program: it creates a private run directory (under
//     [Options.TempDir], else the login's temporary directory; its ACL grants
//     only the login and SYSTEM), writes the script there — its content is
//     base64 in the program — and, for a .ps1, the PowerShell bootstrap of
//     [github.com/postrotate/postrotate/executor.PowerShellBootstrap];
//  3. the payload line as data: the program reads it with
//     [Console]::In.ReadLine(), so it is never part of a script text that
//     PowerShell parses, logs or shows.
//
// The program then starts the interpreter — for a .ps1 the bootstrap, with
// the script as its argument, which pipes the payload line to the script as
// a pipeline object, as Keeper's gateway does; for other scripts cmd.exe
// /d /c (.bat, .cmd and others), python (.py) or the attachment's Command
// — in the run directory, with a minimal environment ([Options.InheritEnv],
// POSTROTATE_ROTATION_ID, POSTROTATE_STEP, POSTROTATE_ATTEMPT, TEMP and TMP
// set to the run directory), writes the payload bytes to its stdin and
// closes it, waits for it, removes the run directory, and exits with its
// exit status: the bootstrap's, which is 0 when $? is True. Result.Command is
// that command line, relative to the run directory; Result.System is
// "Windows".
//
// The program reports on stderr, with lines that start with a random marker
// and are removed from the output, that it starts the script or why it
// could not; a run that could not start is an error, not a Result.
// PowerShell's CLIXML serialization of its streams ("#< CLIXML" then
// <Objs> blocks) is removed from stderr too: progress records are dropped,
// error, warning, verbose, debug and information records become plain text
// lines. Output is capped and masked as by every executor.
//
// # Timeouts and cancellation
//
// At the timeout, or when the context is cancelled, Run sends a Signal
// terminate for the command, waits up to [Options.KillGrace] for it to end,
// then deletes its shell, which ends every process the shell started; a
// second shell removes the run directory the killed program left behind.
// Every TCP connection of the run is closed before Run returns, so no
// request outlives it.
//
// # The protocol
//
// Requests are built and responses parsed with
// [github.com/masterzen/winrm], which also provides the NTLM and Basic
// transports, but the command's life cycle (Command, Send, Receive, Signal,
// Delete) is driven here: the library's Command sets
// WINRS_CONSOLEMODE_STDIN to TRUE, under which the process reads a console,
// not a pipe, and cannot be cancelled while a Receive is pending.
//
// # What is tested where
//
// The tests of this package run the whole protocol path — shell, command,
// stdin in chunks within the envelope size, Receive until done with the
// exit code, Signal and Delete at a timeout, NTLMv2 and Basic login —
// against a fake WS-Management server that runs commands with /bin/sh,
// with [Options.Shell] set to [ShellPOSIX]: the same stdin-only delivery,
// in POSIX sh. The PowerShell program itself is only checked as text
// there: it must be run against a real Windows host (and NTLM against a
// real Windows listener) to be tested.
//
// Plain-HTTP NTLM needs a listener that accepts unencrypted messages
// (AllowUnencrypted); use HTTPS otherwise. PowerShell must run in
// FullLanguage mode ([scriptblock]::Create).
package winrm
