package executor_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/postrotate/postrotate/executor"
)

// fakeProcess is a started script that ends when told to, or never.
type fakeProcess struct {
	done    chan struct{}
	killErr error
	exit    executor.Exit
	// Recorded calls.
	killed, drained, drainedKilled bool
	exitSaw                        executor.Result
}

func newFakeProcess(ended bool, exit executor.Exit) *fakeProcess {
	p := &fakeProcess{done: make(chan struct{}), exit: exit}
	if ended {
		close(p.done)
	}
	return p
}

func (p *fakeProcess) Done() <-chan struct{} { return p.done }
func (p *fakeProcess) Kill() error           { p.killed = true; return p.killErr }
func (p *fakeProcess) Drain(killed bool)     { p.drained, p.drainedKilled = true, killed }
func (p *fakeProcess) Exit(res executor.Result) executor.Exit {
	p.exitSaw = res
	return p.exit
}

const runSecret = "s3cret-Value"

var errExited = errors.New("exited 1 " + runSecret)

func runJob(timeout time.Duration) executor.Job {
	return executor.Job{
		Script:  executor.Script{Name: "dir/x.sh", Timeout: timeout},
		Secrets: []string{runSecret},
	}
}

func TestScriptRunWait(t *testing.T) {
	t.Parallel()
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	for _, tc := range []struct {
		name      string
		ctx       context.Context
		where     string
		ended     bool
		exit      executor.Exit
		killErr   error
		wantExit  int
		wantError string // Result.Error
		wantErr   error  // what the returned error wraps; nil for none
		timedOut  bool
		killed    bool
	}{
		{name: "ExitZero", ctx: context.Background(), ended: true, exit: executor.Exit{Code: 0}, wantExit: 0},
		{name: "ExitThree", ctx: context.Background(), ended: true, exit: executor.Exit{Code: 3}, wantExit: 3},
		{
			name: "ErrorMasked", ctx: context.Background(), ended: true,
			exit:     executor.Exit{Code: -1, Error: "terminated by " + runSecret},
			wantExit: -1, wantError: "terminated by " + executor.Mask,
		},
		{
			name: "NotStartedAfterAll", ctx: context.Background(), where: "h:22", ended: true,
			exit:     executor.Exit{Stage: "start remote program", Err: errExited},
			wantExit: -1, wantError: "start remote program: exited 1 " + executor.Mask, wantErr: errExited,
		},
		{
			name: "TimedOut", ctx: context.Background(),
			wantExit: -1, wantError: "timed out after 10ms: process tree killed", timedOut: true, killed: true,
		},
		{
			name: "TimedOutKillFailed", ctx: context.Background(), killErr: errors.New("no session " + runSecret),
			wantExit: -1, wantError: "timed out after 10ms: kill process tree: no session " + executor.Mask, timedOut: true, killed: true,
		},
		{
			name: "Canceled", ctx: canceled,
			wantExit: -1, wantError: "canceled (context canceled): process tree killed",
			wantErr: context.Canceled, killed: true,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			run := executor.NewScriptRun(runJob(10*time.Millisecond), tc.where)
			run.SetSystem("Linux")
			run.SetCommand("/bin/sh x.sh " + runSecret)
			_, _ = run.Stdout.Write([]byte("out " + runSecret + "\n"))
			_, _ = run.Stderr.Write([]byte("err\n"))
			p := newFakeProcess(tc.ended, tc.exit)
			p.killErr = tc.killErr
			run.Starting()
			res, err := run.Wait(tc.ctx, p)

			checkRunError(t, err, tc.wantErr, tc.where)
			if res.ExitCode != tc.wantExit || res.Error != tc.wantError || res.TimedOut != tc.timedOut {
				t.Errorf("exit %d, error %q, timed out %v; want %d, %q, %v", res.ExitCode, res.Error, res.TimedOut, tc.wantExit, tc.wantError, tc.timedOut)
			}
			if p.killed != tc.killed || !p.drained || p.drainedKilled != tc.killed {
				t.Errorf("killed %v, drained %v (killed %v); want killed %v, drained", p.killed, p.drained, p.drainedKilled, tc.killed)
			}
			checkRunResult(t, res)
			if !tc.killed && p.exitSaw.Stdout != res.Stdout {
				t.Errorf("Exit saw stdout %q, want the masked output %q", p.exitSaw.Stdout, res.Stdout)
			}
		})
	}
}

// checkRunError checks the error of a run on where: none when want is nil,
// else one wrapping want that names the script and where, without the
// secret.
func checkRunError(t *testing.T, err, want error, where string) {
	t.Helper()
	switch {
	case want == nil && err != nil:
		t.Errorf("error %v, want none", err)
	case want != nil && !errors.Is(err, want):
		t.Errorf("error %v, want one wrapping %v", err, want)
	case err != nil && (!strings.Contains(err.Error(), "x.sh") || !strings.Contains(err.Error(), where) || strings.Contains(err.Error(), runSecret)):
		t.Errorf("error %q: want it to name the script and %q, without the secret", err, where)
	}
}

// checkRunResult checks what every Result of TestScriptRunWait carries:
// the output and command masked, the system, the times.
func checkRunResult(t *testing.T, res executor.Result) {
	t.Helper()
	if res.Stdout != "out "+executor.Mask+"\n" || res.Stderr != "err\n" || res.Command != "/bin/sh x.sh "+executor.Mask || res.System != "Linux" {
		t.Errorf("stdout %q, stderr %q, command %q, system %q", res.Stdout, res.Stderr, res.Command, res.System)
	}
	if res.StartedAt.IsZero() || res.FinishedAt.Before(res.StartedAt) {
		t.Errorf("started at %v, finished at %v", res.StartedAt, res.FinishedAt)
	}
}

func TestScriptRunNotStarted(t *testing.T) {
	t.Parallel()
	run := executor.NewScriptRun(runJob(0), "host:5985")
	if run.Name() != "x.sh" {
		t.Errorf("name %q, want the base name x.sh", run.Name())
	}
	cause := errors.New("refused for " + runSecret)
	res, err := run.NotStarted("connect", cause)
	if !errors.Is(err, cause) {
		t.Errorf("error %v does not wrap its cause", err)
	}
	if msg := err.Error(); !strings.Contains(msg, "x.sh") || !strings.Contains(msg, "host:5985") {
		t.Errorf("error %q: want it to name the script and the target", msg)
	}
	if res.ExitCode != -1 || res.Error != "connect: refused for "+executor.Mask || res.Success() {
		t.Errorf("result %+v", res)
	}
	if res.StartedAt.IsZero() || res.FinishedAt.Before(res.StartedAt) {
		t.Errorf("started at %v, finished at %v: want the attempt's span", res.StartedAt, res.FinishedAt)
	}
	if strings.Contains(res.Error+err.Error(), runSecret) {
		t.Error("the secret leaked")
	}
}
