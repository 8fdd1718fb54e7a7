package winrm

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/postrotate/postrotate/executor"
)

// Auth is how Run logs in to a target.
type Auth string

const (
	// AuthNTLM logs in with NTLMv2 (HTTP Negotiate/NTLM), falling back to
	// Basic when the server offers only that. The default.
	AuthNTLM Auth = "ntlm"
	// AuthBasic logs in with HTTP Basic: only over HTTPS, or on a listener
	// that allows unencrypted Basic.
	AuthBasic Auth = "basic"
)

// Shell is the program Run starts on the target to run a script.
type Shell string

const (
	// ShellPowerShell runs PowerShell reading its program from stdin
	// (powershell.exe ... -Command -). The default; Windows targets.
	ShellPowerShell Shell = "powershell"
	// ShellPOSIX runs /bin/sh reading its program from stdin (/bin/sh -s).
	// It exists for the tests of this package, whose fake WS-Management
	// server runs commands with /bin/sh, and for WS-Management servers on
	// POSIX systems.
	ShellPOSIX Shell = "posix"
)

// Options configures a WinRM executor. A zero field means its default.
type Options struct {
	// Auth is how to log in. Defaults to [AuthNTLM].
	Auth Auth
	// Shell is the program that runs scripts on the target. Defaults to
	// [ShellPowerShell].
	Shell Shell
	// DialTimeout bounds opening a TCP connection. Defaults to 10s.
	DialTimeout time.Duration
	// OperationTimeout is the WS-Management OperationTimeout of each
	// request: how long the server may hold a Receive that has no output
	// yet. Defaults to 20s.
	OperationTimeout time.Duration
	// RequestTimeout bounds waiting for the response to one request; it
	// must exceed OperationTimeout. Defaults to OperationTimeout + 30s.
	RequestTimeout time.Duration
	// EnvelopeSize is the largest SOAP envelope sent or asked for, in bytes:
	// stdin is sent in chunks that fit. Defaults to 153600 (150 KiB, the
	// smallest MaxEnvelopeSizekb a Windows listener has had by default).
	EnvelopeSize int
	// KillGrace is how long Run waits, at a timeout or cancellation, for the
	// command to end after it was signalled to terminate, and again after
	// its shell was deleted. Defaults to 5s.
	KillGrace time.Duration
	// TempDir is the directory on the target under which each run gets its
	// private directory. Empty means the login's temporary directory
	// ([IO.Path]::GetTempPath(), or $TMPDIR else /tmp with ShellPOSIX).
	TempDir string
	// InheritEnv names the variables of the login environment a script
	// keeps. Nil means [DefaultInheritEnv] (with ShellPOSIX:
	// [DefaultPOSIXInheritEnv]); an empty non-nil slice keeps nothing.
	InheritEnv []string
	// Interpreters runs scripts that do not run through the PowerShell
	// bootstrap. With ShellPowerShell the shebang rule does not apply
	// (Windows has none) and the defaults are "cmd.exe /d /c" for Shell,
	// "python" for Python and "powershell.exe" for PowerShell, which also
	// reads the remote program; with ShellPOSIX they are those of
	// [executor.Argv].
	Interpreters executor.Interpreters
	// Dial opens the TCP connection to a target (a proxy can hook in
	// here). Defaults to a net.Dialer.
	Dial func(ctx context.Context, network, address string) (net.Conn, error)
}

// DefaultInheritEnv returns the names of the variables of the login
// environment a script keeps by default on Windows.
func DefaultInheritEnv() []string {
	return []string{
		"ALLUSERSPROFILE", "APPDATA", "COMMONPROGRAMFILES", "COMMONPROGRAMFILES(X86)", "COMMONPROGRAMW6432",
		"COMPUTERNAME", "COMSPEC", "HOMEDRIVE", "HOMEPATH", "LOCALAPPDATA", "NUMBER_OF_PROCESSORS", "OS",
		"PATH", "PATHEXT", "PROCESSOR_ARCHITECTURE", "PROGRAMDATA", "PROGRAMFILES", "PROGRAMFILES(X86)",
		"PROGRAMW6432", "PSMODULEPATH", "PUBLIC", "SYSTEMDRIVE", "SYSTEMROOT", "USERDOMAIN", "USERNAME",
		"USERPROFILE", "WINDIR",
	}
}

// DefaultPOSIXInheritEnv returns the names of the variables of the login
// environment a script keeps by default with [ShellPOSIX].
func DefaultPOSIXInheritEnv() []string {
	return []string{"PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LC_ALL", "TZ"}
}

// ErrNoTarget is returned for a job without a Target or without a host.
var ErrNoTarget = errors.New("job has no target host")

// ErrUnauthorized is returned when the target refuses the login (HTTP 401).
var ErrUnauthorized = errors.New("login refused")

// housekeepingTimeout bounds removing a run directory left behind by a
// killed script.
const housekeepingTimeout = 30 * time.Second

// WinRM runs scripts on remote Windows machines over WinRM (WS-Management).
type WinRM struct {
	opts   Options
	optErr error // a bad option, returned by every Run
}

var _ executor.Executor = (*WinRM)(nil)

var (
	windowsEnvName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_()]*$`)
	posixEnvName   = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
)

// New returns a WinRM executor with opts' zero fields set to their defaults.
// A bad option makes every Run fail with an error saying so.
func New(opts Options) *WinRM {
	opts.Auth = cmp.Or(opts.Auth, AuthNTLM)
	opts.Shell = cmp.Or(opts.Shell, ShellPowerShell)
	opts.DialTimeout = cmp.Or(opts.DialTimeout, 10*time.Second)
	opts.OperationTimeout = cmp.Or(opts.OperationTimeout, 20*time.Second)
	opts.RequestTimeout = cmp.Or(opts.RequestTimeout, opts.OperationTimeout+30*time.Second)
	opts.EnvelopeSize = cmp.Or(opts.EnvelopeSize, 153600)
	opts.KillGrace = cmp.Or(opts.KillGrace, 5*time.Second)
	envName := windowsEnvName
	if opts.Shell == ShellPOSIX {
		envName = posixEnvName
		if opts.InheritEnv == nil {
			opts.InheritEnv = DefaultPOSIXInheritEnv()
		}
	} else {
		opts.Interpreters.Shell = cmp.Or(opts.Interpreters.Shell, "cmd.exe /d /c")
		opts.Interpreters.Python = cmp.Or(opts.Interpreters.Python, "python")
		opts.Interpreters.PowerShell = cmp.Or(opts.Interpreters.PowerShell, "powershell.exe")
		if opts.InheritEnv == nil {
			opts.InheritEnv = DefaultInheritEnv()
		}
	}
	opts.InheritEnv = append([]string(nil), opts.InheritEnv...)
	if opts.Dial == nil {
		var d net.Dialer
		opts.Dial = d.DialContext
	}
	w := &WinRM{opts: opts}
	switch {
	case opts.Auth != AuthNTLM && opts.Auth != AuthBasic:
		w.optErr = fmt.Errorf("option Auth: want %q or %q, got %q", AuthNTLM, AuthBasic, opts.Auth)
	case opts.Shell != ShellPowerShell && opts.Shell != ShellPOSIX:
		w.optErr = fmt.Errorf("option Shell: want %q or %q, got %q", ShellPowerShell, ShellPOSIX, opts.Shell)
	case opts.RequestTimeout <= opts.OperationTimeout:
		w.optErr = fmt.Errorf("option RequestTimeout: %s must exceed OperationTimeout %s", opts.RequestTimeout, opts.OperationTimeout)
	case opts.EnvelopeSize < 16<<10:
		w.optErr = fmt.Errorf("option EnvelopeSize: %d is below the 16 KiB minimum", opts.EnvelopeSize)
	case opts.Shell == ShellPowerShell && len(strings.Fields(opts.Interpreters.PowerShell)) == 0:
		w.optErr = errors.New("option Interpreters.PowerShell: empty")
	}
	for _, name := range opts.InheritEnv {
		if !envName.MatchString(name) {
			w.optErr = fmt.Errorf("option InheritEnv: %q is not a variable name", name)
		}
	}
	return w
}

// port returns the target's port with the WinRM default applied.
func port(t *executor.Target) int {
	switch {
	case t.Port > 0:
		return t.Port
	case t.HTTPS:
		return 5986
	}
	return 5985
}

// Run runs the job's script on job.Target in a fresh private directory,
// through one WinRM shell and command (see the package documentation). A
// non-zero exit and a timeout are Results; Run returns an error when the
// script could not be started (unreachable host, refused login, a run
// directory that could not be prepared...: the error names the address),
// or when ctx is cancelled (after terminating the remote command and
// deleting its shell; the error wraps ctx.Err()).
func (w *WinRM) Run(ctx context.Context, job executor.Job) (executor.Result, error) {
	t := job.Target
	where := "no target"
	if t != nil && t.Host != "" {
		where = net.JoinHostPort(t.Host, strconv.Itoa(port(t)))
	}
	run := executor.NewScriptRun(job, where)
	run.SetSystem("Windows")
	switch {
	case t == nil || t.Host == "":
		return run.NotStarted("no target", ErrNoTarget)
	case w.optErr != nil:
		return run.NotStarted("options", w.optErr)
	}
	if err := ctx.Err(); err != nil {
		return run.NotStarted("canceled before start", err)
	}
	prog, err := w.program(job)
	if err != nil {
		return run.NotStarted("choose interpreter", err)
	}
	run.SetCommand(prog.display)

	c, err := w.newClient(t)
	if err != nil {
		return run.NotStarted("configure client", err)
	}
	defer c.close()
	shellID, err := c.createShell()
	if err != nil {
		return run.NotStarted("open shell", err)
	}

	run.Starting()
	cmdID, err := c.command(shellID, prog.command)
	if err != nil {
		_ = c.deleteShell(shellID)
		return run.NotStarted("start "+prog.command, err)
	}
	p := &remoteCommand{
		w: w, prog: prog, filter: newStderrFilter(prog.marker, run.Stderr), stop: make(chan struct{}),
		cmd: &command{c: c, shellID: shellID, id: cmdID, finished: make(chan struct{})},
	}
	p.transfer(run.Stdout)
	return run.Wait(ctx, p)
}

// remoteCommand is the command running the remote program, as
// [executor.ScriptRun] drives it.
type remoteCommand struct {
	w      *WinRM
	prog   program
	cmd    *command
	filter *stderrFilter // the command's stderr
	stop   chan struct{} // closed to end the transfers
	wg     sync.WaitGroup
	// stdinErr is why sending stdin failed, once wg is done.
	stdinErr error
	// shellDeleted is set once Kill deleted the shell.
	shellDeleted bool
}

var _ executor.Process = (*remoteCommand)(nil)

// transfer starts receiving the output into stdout and the filter, and
// sending the program's stdin, until the command finishes or stop is
// closed.
func (p *remoteCommand) transfer(stdout io.Writer) {
	p.wg.Add(2)
	go func() {
		defer p.wg.Done()
		p.cmd.receive(stdout, p.filter, p.stop)
	}()
	go func() {
		defer p.wg.Done()
		p.stdinErr = p.cmd.send(p.prog.stdin, p.cmd.c.inputChunk(), p.stop)
	}()
}

func (p *remoteCommand) Done() <-chan struct{} { return p.cmd.finished }

func (p *remoteCommand) Kill() error {
	p.shellDeleted = true
	return p.w.kill(p.cmd)
}

// Drain ends the transfers and deletes the shell, which ends anything the
// script left behind; it removes the run directory when the program had no
// chance to: the command was killed or its output was lost.
func (p *remoteCommand) Drain(killed bool) {
	close(p.stop)
	c := p.cmd.c
	if !p.shellDeleted {
		_ = c.deleteShell(p.cmd.shellID)
	}
	if killed || !p.cmd.done() {
		p.w.cleanup(c, p.prog)
	}
	c.close() // ends requests still in flight
	p.wg.Wait()
	p.filter.Flush()
}

// Exit reads the command's exit code, and the status lines of the remote
// program: a run directory it could not prepare, or a program that ended
// before it started the script, is a script that did not start.
func (p *remoteCommand) Exit(res executor.Result) executor.Exit {
	failed, reason := p.filter.Failure()
	switch {
	case failed:
		if msg := summary(res.Stderr); msg != "" {
			reason += ": " + msg
		}
		return executor.Exit{Stage: "prepare run directory", Err: errors.New(reason)}
	case !p.cmd.done():
		if !p.filter.Ready() {
			return executor.Exit{Stage: "run remote program", Err: p.cmd.err}
		}
		return executor.Exit{Code: -1, Error: fmt.Sprintf("output lost while the script ran: %v; shell deleted", p.cmd.err)}
	case !p.filter.Ready():
		err := fmt.Errorf("%s exited with status %d before starting the script", p.prog.command, p.cmd.exitCode)
		if msg := summary(res.Stderr); msg != "" {
			err = fmt.Errorf("%w: %s", err, msg)
		}
		if p.stdinErr != nil {
			err = fmt.Errorf("%w (send stdin: %w)", err, p.stdinErr)
		}
		return executor.Exit{Stage: "start remote program", Err: err}
	}
	return executor.Exit{Code: p.cmd.exitCode}
}

// kill terminates a command at a timeout or cancellation: a Signal
// terminate, then, once the command ended or KillGrace passed, the deletion
// of its shell, which ends every process the shell started.
func (w *WinRM) kill(cmd *command) error {
	sigErr := cmd.signal()
	waitFor(cmd.finished, w.opts.KillGrace)
	delErr := cmd.c.deleteShell(cmd.shellID)
	waitFor(cmd.finished, w.opts.KillGrace)
	if sigErr != nil && delErr != nil {
		return fmt.Errorf("signal terminate: %w; delete shell: %w", sigErr, delErr)
	}
	return nil
}

// cleanup removes the run directory of a program that could not remove it
// itself, in a shell of its own. Best effort: nothing to report it to.
func (w *WinRM) cleanup(c *client, prog program) {
	command, stdin := w.cleanupProgram(prog)
	_ = c.exec(command, stdin, time.Now().Add(housekeepingTimeout))
}

// waitFor waits until ch is closed or d has passed.
func waitFor(ch <-chan struct{}, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ch:
	case <-t.C:
	}
}

// summary returns the first lines of a remote program's stderr, for an
// error message.
func summary(stderr string) string {
	s := strings.Join(strings.Fields(stderr), " ")
	if r := []rune(s); len(r) > 300 {
		s = string(r[:300]) + "..."
	}
	return s
}
