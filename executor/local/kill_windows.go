//go:build windows

package local

import (
	"fmt"
	"os/exec"
	"unsafe"

	"golang.org/x/sys/windows"
)

// This file compiles for Windows (GOOS=windows go vet) but its tests cannot
// run on the Linux machines the project is developed on; the conformance
// suite must be run on a Windows host.

// graceful tells that the tree can be asked to stop before it is killed:
// Windows has no SIGTERM for console-less processes, the job is terminated.
const graceful = false

// tree is the Job Object holding the script and every process it starts.
type tree struct{ job windows.Handle }

// newTree returns the tree of a script about to start: its Job Object is
// created once it has started.
func (*Local) newTree() (*tree, error) { return &tree{}, nil }

// prepare has nothing to set before start: the process is put in its job
// right after it starts.
func (*tree) prepare(*exec.Cmd) {}

// retryStart tells whether a failed start is to be tried again: never.
func (*tree) retryStart(error) bool { return false }

// started creates a Job Object that kills its processes when closed and puts
// the started script in it. A process the script starts in the instant
// between start and assignment is not in the job: os/exec cannot start a
// process suspended.
func (t *tree) started(cmd *exec.Cmd) error {
	job, err := windows.CreateJobObject(nil, nil)
	if err != nil {
		return fmt.Errorf("create job object: %w", err)
	}
	info := windows.JOBOBJECT_EXTENDED_LIMIT_INFORMATION{
		BasicLimitInformation: windows.JOBOBJECT_BASIC_LIMIT_INFORMATION{
			LimitFlags: windows.JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE,
		},
	}
	if _, err := windows.SetInformationJobObject(job, windows.JobObjectExtendedLimitInformation,
		uintptr(unsafe.Pointer(&info)), uint32(unsafe.Sizeof(info))); err != nil {
		windows.CloseHandle(job)
		return fmt.Errorf("set job object limits: %w", err)
	}
	proc, err := windows.OpenProcess(windows.PROCESS_SET_QUOTA|windows.PROCESS_TERMINATE, false, uint32(cmd.Process.Pid))
	if err != nil {
		windows.CloseHandle(job)
		return fmt.Errorf("open process %d: %w", cmd.Process.Pid, err)
	}
	defer windows.CloseHandle(proc)
	if err := windows.AssignProcessToJobObject(job, proc); err != nil {
		windows.CloseHandle(job)
		return fmt.Errorf("assign process %d to job object: %w", cmd.Process.Pid, err)
	}
	t.job = job
	return nil
}

// terminate ends every process in the job.
func (t *tree) terminate() error { return t.kill() }

// kill ends every process in the job.
func (t *tree) kill() error { return windows.TerminateJobObject(t.job, 1) }

// release closes the job, which ends any process still in it. The job is
// closed too when the worker dies, however it dies: its scripts die with it.
func (t *tree) release() {
	if t.job != 0 {
		windows.CloseHandle(t.job)
	}
}

// containment is nil: the Job Object holds every process a script starts
// (the job does not allow breaking away from it).
func containment() error { return nil }

// sweep has nothing to do: a job dies with the worker.
func sweep() (int, error) { return 0, nil }
