package local

import (
	"bytes"
	"context"
	"errors"
	"fmt"
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
	mask := job.Masker()
	res := executor.Result{System: executor.System(runtime.GOOS), ExitCode: -1}
	name := executor.ScriptFileName(job.Script.Name)
	notStarted := func(why string, err error) (executor.Result, error) {
		res.StartedAt = time.Now()
		res.FinishedAt = res.StartedAt
		res.Error = mask.Mask(why + ": " + err.Error())
		return res, mask.MaskError(fmt.Errorf("run %s: %s: %w", name, why, err))
	}
	if err := ctx.Err(); err != nil {
		return notStarted("canceled before start", err)
	}

	dir, err := os.MkdirTemp(l.opts.TempDir, "postrotate-")
	if err != nil {
		return notStarted("create run directory", err)
	}
	defer os.RemoveAll(dir) //nolint:errcheck // best effort; nothing to report it to
	scriptPath := filepath.Join(dir, name)
	argv, err := executor.Argv(job.Script, scriptPath, l.opts.Interpreters)
	if err != nil {
		return notStarted("choose interpreter", err)
	}
	res.Command = mask.Mask(strings.Join(argv, " "))
	if err := writeFile(scriptPath, job.Script.Content, 0o700); err != nil {
		return notStarted("write script", err)
	}
	if executor.UsesBootstrap(job.Script) {
		if err := writeFile(executor.BootstrapPath(scriptPath), []byte(executor.PowerShellBootstrap), 0o600); err != nil {
			return notStarted("write bootstrap", err)
		}
	}

	stdout := executor.NewOutput(job.EffectiveOutputLimit())
	stderr := executor.NewOutput(job.EffectiveOutputLimit())
	env := l.environ(job, dir)
	t, err := l.newTree()
	if err != nil {
		return notStarted("contain process tree", err)
	}
	defer t.release()
	newCmd := func() *exec.Cmd {
		cmd := exec.Command(argv[0], argv[1:]...)
		cmd.Dir = dir
		cmd.Env = env
		if len(job.Stdin) > 0 {
			cmd.Stdin = bytes.NewReader(job.Stdin)
		} // else the null device: EOF at once
		cmd.Stdout, cmd.Stderr = stdout, stderr
		cmd.WaitDelay = l.opts.WaitDelay
		t.prepare(cmd)
		return cmd
	}

	res.StartedAt = time.Now()
	cmd, err := start(newCmd, t)
	if err != nil {
		return notStarted("start "+argv[0], err)
	}
	if err := t.started(cmd); err != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return notStarted("track process tree", err)
	}

	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	timeout := job.EffectiveTimeout()
	timer := time.NewTimer(timeout)
	defer timer.Stop()

	var waitErr error
	canceled := false
	select {
	case waitErr = <-done:
	case <-timer.C:
		select {
		case waitErr = <-done: // exited at the very moment
		default:
			res.TimedOut = true
			waitErr = l.stop(t, done)
		}
	case <-ctx.Done():
		canceled = true
		waitErr = l.stop(t, done)
	}
	res.FinishedAt = time.Now()
	res.Stdout, res.StdoutTruncated = stdout.Finish(mask)
	res.Stderr, res.StderrTruncated = stderr.Finish(mask)

	switch {
	case canceled:
		res.Error = mask.Mask(fmt.Sprintf("canceled (%v): process tree killed", ctx.Err()))
		return res, mask.MaskError(fmt.Errorf("run %s: %w", name, ctx.Err()))
	case res.TimedOut:
		res.Error = fmt.Sprintf("timed out after %s: process tree killed", timeout)
		return res, nil
	}
	res.ExitCode = cmd.ProcessState.ExitCode()
	var exitErr *exec.ExitError
	switch {
	case res.ExitCode < 0:
		res.Error = mask.Mask("terminated: " + cmd.ProcessState.String())
	case waitErr == nil, errors.Is(waitErr, exec.ErrWaitDelay), errors.As(waitErr, &exitErr):
		// Completed; a pipe held open by a background process after the
		// script exited is not the script's failure.
	default:
		res.Error = mask.Mask("wait: " + waitErr.Error())
	}
	return res, nil
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

// stop kills the process tree: it asks it to stop, gives it KillGrace, then
// kills what is left, and waits for the script's process to be reaped (the
// output pipes are closed after WaitDelay at the latest).
func (l *Local) stop(t *tree, done <-chan error) error {
	if err := t.terminate(); err == nil && graceful {
		grace := time.NewTimer(l.opts.KillGrace)
		defer grace.Stop()
		select {
		case err := <-done:
			_ = t.kill() // what outlived the leader
			return err
		case <-grace.C:
		}
	}
	_ = t.kill()
	return <-done
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
