//go:build linux

package local

import "syscall"

// dieWithWorker has the kernel send SIGKILL to the script when the worker
// dies, however it dies (PR_SET_PDEATHSIG). Strictly, the signal follows the
// thread that started the script, not the process; Go ends a thread only
// when a goroutine locked to it (runtime.LockOSThread) returns without
// unlocking it, so Run must not be called from such a goroutine, and the
// worker locks none. Only the script gets the signal: what it started is
// left to its cgroup (see Sweep) or, without one, keeps running.
func dieWithWorker(attr *syscall.SysProcAttr) { attr.Pdeathsig = syscall.SIGKILL }
