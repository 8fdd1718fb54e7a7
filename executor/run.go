package executor

import (
	"context"
	"fmt"
	"time"
)

// Process is a started script as [ScriptRun.Wait] drives it: each executor
// implements it over its own way of running one (a local process, an SSH
// session, a WinRM command).
type Process interface {
	// Done is closed once the script has ended.
	Done() <-chan struct{}
	// Kill kills the script's process tree at a timeout or cancellation:
	// it asks the tree to stop, gives it a grace period, kills what is
	// left, and waits a bounded time for the script to end. Its error says
	// what could not be done, for Result.Error (see [KillNote]).
	Kill() error
	// Drain is called once the script has ended, or was killed when
	// killed is set: it waits a bounded time for the output to end and
	// releases what the run holds.
	Drain(killed bool)
	// Exit says how a script that was not killed ended. res is the Result
	// so far, its output captured and masked.
	Exit(res Result) Exit
}

// Exit is how a script that was not killed ended.
type Exit struct {
	// Code is the exit status; -1 when the script did not exit by itself.
	Code int
	// Error says why the script did not complete normally, e.g.
	// "terminated by signal KILL"; "" when it exited. It is masked.
	Error string
	// Err, when set, tells that the script turned out never to have
	// started: the run ends as [ScriptRun.NotStarted] does, with Stage as
	// what failed.
	Err   error
	Stage string
}

// ScriptRun is one run of a job's script: the skeleton every script
// executor shares. The executor prepares the script its way, reporting a
// failure with NotStarted; it starts it with the Stdout and Stderr writers,
// then hands the started [Process] to Wait, which waits for it within the
// job's timeout, kills its process tree at the timeout or a cancellation,
// and builds the Result: the output capped and masked, the three endings
// (killed at the timeout, cancelled, ended by itself) told apart.
type ScriptRun struct {
	// Stdout and Stderr capture the script's output streams, capped to the
	// job's OutputLimit.
	Stdout, Stderr *Output

	job   Job
	name  string // the script's file name
	where string // the target, named in errors; "" for this machine
	begin time.Time
	mask  *Masker
	res   Result
}

// NewScriptRun begins a run of job's script on where, the target's
// "host:port" that errors name ("" for a script run on this machine). The
// time spent until [ScriptRun.Starting] counts as the run's for a script
// that cannot start, so that a connection timeout shows in the duration.
func NewScriptRun(job Job, where string) *ScriptRun {
	return &ScriptRun{
		Stdout: NewOutput(job.EffectiveOutputLimit()),
		Stderr: NewOutput(job.EffectiveOutputLimit()),
		job:    job,
		name:   ScriptFileName(job.Script.Name),
		where:  where,
		begin:  time.Now(),
		mask:   job.Masker(),
		res:    Result{ExitCode: -1},
	}
}

// Name is the script's file name: [ScriptFileName] of the job's script.
func (r *ScriptRun) Name() string { return r.name }

// SetSystem sets Result.System.
func (r *ScriptRun) SetSystem(system string) { r.res.System = system }

// SetCommand sets Result.Command, masked.
func (r *ScriptRun) SetCommand(command string) { r.res.Command = r.mask.Mask(command) }

// Starting marks the moment the script starts: Result.StartedAt.
func (r *ScriptRun) Starting() { r.res.StartedAt = time.Now() }

// NotStarted returns the Result and error of a script that could not start
// (or turned out not to have started) at stage, because of err: exit -1
// and both masked.
func (r *ScriptRun) NotStarted(stage string, err error) (Result, error) {
	if r.res.StartedAt.IsZero() {
		r.res.StartedAt = r.begin
	}
	r.res.FinishedAt = time.Now()
	r.res.Error = r.mask.Mask(stage + ": " + err.Error())
	return r.res, r.mask.MaskError(fmt.Errorf("%s: %s: %w", r.what(), stage, err))
}

// what names the run in errors: "run script.sh", with " on host:port" for
// a target.
func (r *ScriptRun) what() string {
	if r.where == "" {
		return "run " + r.name
	}
	return "run " + r.name + " on " + r.where
}

// Wait waits for the started script p until it ends, the job's timeout
// passes or ctx is done, and kills its process tree in the last two
// cases. It returns the Result; a timeout is a Result, a cancellation
// returns an error wrapping ctx.Err() too.
func (r *ScriptRun) Wait(ctx context.Context, p Process) (Result, error) {
	timeout := r.job.EffectiveTimeout()
	timedOut, canceled := Wait(ctx, p.Done(), timeout)
	var killErr error
	if timedOut || canceled {
		killErr = p.Kill()
	}
	p.Drain(timedOut || canceled)
	r.res.FinishedAt = time.Now()
	r.res.Stdout, r.res.StdoutTruncated = r.Stdout.Finish(r.mask)
	r.res.Stderr, r.res.StderrTruncated = r.Stderr.Finish(r.mask)

	killed := KillNote(killErr)
	switch {
	case canceled:
		r.res.Error = r.mask.Mask(fmt.Sprintf("canceled (%v): %s", ctx.Err(), killed))
		return r.res, r.mask.MaskError(fmt.Errorf("%s: %w", r.what(), ctx.Err()))
	case timedOut:
		r.res.TimedOut = true
		r.res.Error = r.mask.Mask(fmt.Sprintf("timed out after %s: %s", timeout, killed))
		return r.res, nil
	}
	exit := p.Exit(r.res)
	if exit.Err != nil {
		return r.NotStarted(exit.Stage, exit.Err)
	}
	r.res.ExitCode = exit.Code
	r.res.Error = r.mask.Mask(exit.Error)
	return r.res, nil
}
