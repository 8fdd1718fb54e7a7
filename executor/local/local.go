package local

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/postrotate/postrotate/executor"
)

// Options configures a Local executor. A zero field means its default.
type Options struct {
	// TempDir is the parent of the per-run directories. Defaults to
	// os.TempDir().
	TempDir string
	// InheritEnv names the variables copied from the worker's environment
	// into the script's. Nil means [DefaultInheritEnv]; an empty non-nil
	// slice inherits nothing.
	InheritEnv []string
	// Env holds extra KEY=VALUE variables for every script.
	Env []string
	// KillGrace is how long a process tree has between SIGTERM and SIGKILL
	// at a timeout or cancellation. Defaults to 5s. Unused on Windows, where
	// the tree is terminated at once.
	KillGrace time.Duration
	// WaitDelay is how long Run waits, once the script's process has ended,
	// for the output pipes to close; a process left in the background may
	// hold them open. Then they are closed and Run returns. Defaults to 2s.
	WaitDelay time.Duration
	// Interpreters runs scripts that have neither a Command nor a shebang.
	// A PowerShell left empty defaults to "powershell.exe" on Windows.
	// Relative interpreter names are looked up in the worker's PATH.
	Interpreters executor.Interpreters
}

// Local runs scripts as processes on this machine.
type Local struct {
	opts Options
	// noCgroup and cgroupByProcs are set by tests only: run scripts
	// without a cgroup, or move them into it after they start.
	noCgroup, cgroupByProcs bool
}

var _ executor.Executor = (*Local)(nil)

// errGone is returned when signalling a process tree that no longer exists.
var errGone = errors.New("process tree gone")

// New returns a Local executor with opts' zero fields set to their defaults.
func New(opts Options) *Local {
	if opts.TempDir == "" {
		opts.TempDir = os.TempDir()
	}
	if opts.InheritEnv == nil {
		opts.InheritEnv = DefaultInheritEnv()
	}
	if opts.KillGrace <= 0 {
		opts.KillGrace = 5 * time.Second
	}
	if opts.WaitDelay <= 0 {
		opts.WaitDelay = 2 * time.Second
	}
	if opts.Interpreters.PowerShell == "" && runtime.GOOS == "windows" {
		opts.Interpreters.PowerShell = "powershell.exe"
	}
	opts.InheritEnv = append([]string(nil), opts.InheritEnv...)
	opts.Env = append([]string(nil), opts.Env...)
	_ = containment() // decided once, at the first New
	return &Local{opts: opts}
}

// Run runs the job's script to completion in a fresh private directory. A
// non-zero exit and a timeout are Results; Run returns an error only when
// the script could not be started, or when ctx is cancelled (after killing
// the process tree; the error wraps ctx.Err()).
func (l *Local) Run(ctx context.Context, job executor.Job) (executor.Result, error) {
	run := executor.NewScriptRun(job, "")
	run.SetSystem(executor.System(runtime.GOOS))
	if err := ctx.Err(); err != nil {
		return run.NotStarted("canceled before start", err)
	}

	dir, err := os.MkdirTemp(l.opts.TempDir, "postrotate-")
	if err != nil {
		return run.NotStarted("create run directory", err)
	}
	defer os.RemoveAll(dir) //nolint:errcheck // best effort; nothing to report it to
	scriptPath := filepath.Join(dir, run.Name())
	argv, err := executor.Argv(job.Script, scriptPath, l.opts.Interpreters)
	if err != nil {
		return run.NotStarted("choose interpreter", err)
	}
	run.SetCommand(strings.Join(argv, " "))
	if err := writeFile(scriptPath, job.Script.Content, 0o700); err != nil {
		return run.NotStarted("write script", err)
	}
	if executor.UsesBootstrap(job.Script) {
		if err := writeFile(executor.BootstrapPath(scriptPath), []byte(executor.PowerShellBootstrap), 0o600); err != nil {
			return run.NotStarted("write bootstrap", err)
		}
	}

	t, err := l.newTree()
	if err != nil {
		return run.NotStarted("contain process tree", err)
	}
	defer t.release()
	spec := cmdSpec{argv: argv, dir: dir, env: l.environ(job, dir), stdin: job.Stdin, stdout: run.Stdout, stderr: run.Stderr}
	run.Starting()
	cmd, err := start(func() *exec.Cmd { return l.newCmd(spec, t) }, t)
	if err != nil {
		return run.NotStarted("start "+argv[0], err)
	}
	if err := t.started(cmd); err != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return run.NotStarted("track process tree", err)
	}
	return run.Wait(ctx, l.newProcess(cmd, t))
}

// cmdSpec is what the script's process is started with.
type cmdSpec struct {
	argv           []string
	dir            string
	env            []string
	stdin          []byte
	stdout, stderr io.Writer
}

// newCmd returns the script's process, ready to start in tree t.
func (l *Local) newCmd(c cmdSpec, t *tree) *exec.Cmd {
	cmd := exec.Command(c.argv[0], c.argv[1:]...)
	cmd.Dir = c.dir
	cmd.Env = c.env
	if len(c.stdin) > 0 {
		cmd.Stdin = bytes.NewReader(c.stdin)
	} // else the null device: EOF at once
	cmd.Stdout, cmd.Stderr = c.stdout, c.stderr
	cmd.WaitDelay = l.opts.WaitDelay
	t.prepare(cmd)
	return cmd
}

// process is a started script, as [executor.ScriptRun] drives it.
type process struct {
	l    *Local
	t    *tree
	cmd  *exec.Cmd
	done chan struct{} // closed once cmd.Wait returned
	err  error         // what cmd.Wait returned, once done is closed
}

var _ executor.Process = (*process)(nil)

// newProcess returns the started cmd as a process, waited for from now on.
func (l *Local) newProcess(cmd *exec.Cmd, t *tree) *process {
	p := &process{l: l, t: t, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p
}

func (p *process) Done() <-chan struct{} { return p.done }

// Kill kills the process tree: it asks it to stop, gives it KillGrace, then
// kills what is left, and waits for the script's process to be reaped (the
// output pipes are closed after WaitDelay at the latest).
func (p *process) Kill() error {
	if err := p.t.terminate(); err == nil && graceful {
		grace := time.NewTimer(p.l.opts.KillGrace)
		defer grace.Stop()
		select {
		case <-p.done:
			_ = p.t.kill() // what outlived the leader
			return nil
		case <-grace.C:
		}
	}
	_ = p.t.kill()
	<-p.done
	return nil
}

// Drain waits for cmd.Wait, which has closed the output pipes.
func (p *process) Drain(bool) { <-p.done }

// Exit reads how the process ended.
func (p *process) Exit(executor.Result) executor.Exit {
	state := p.cmd.ProcessState
	exit := executor.Exit{Code: state.ExitCode()}
	var exitErr *exec.ExitError
	switch {
	case exit.Code < 0:
		exit.Error = "terminated: " + state.String()
	case p.err == nil, errors.Is(p.err, exec.ErrWaitDelay), errors.As(p.err, &exitErr):
		// Completed; a pipe held open by a background process after the
		// script exited is not the script's failure.
	default:
		exit.Error = "wait: " + p.err.Error()
	}
	return exit
}

// start starts the command newCmd returns, again when t asks for it or when
// the script is briefly busy. A script run by its shebang is executed right
// after it was written: a process forked meanwhile by another goroutine may
// still hold the written file open ("text file busy") until it execs.
func start(newCmd func() *exec.Cmd, t *tree) (*exec.Cmd, error) {
	for attempt := 0; ; attempt++ {
		cmd := newCmd()
		err := cmd.Start()
		switch {
		case err == nil:
			return cmd, nil
		case errors.Is(err, syscall.ETXTBSY) && attempt < 5:
			time.Sleep(time.Duration(attempt+1) * 10 * time.Millisecond)
		case t.retryStart(err):
		default:
			return nil, err
		}
	}
}

// writeFile writes a file that must not exist yet with exactly mode perm
// (not reduced by the umask).
func writeFile(name string, data []byte, perm os.FileMode) error {
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil && runtime.GOOS != "windows" {
		err = os.Chmod(name, perm)
	}
	return err
}
