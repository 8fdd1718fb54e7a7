//go:build unix

package local

import (
	"errors"
	"os/exec"
	"syscall"
)

// graceful tells that the tree can be asked to stop before it is killed.
const graceful = true

// tree is the process group a script leads and, on Linux where cgroup v2 is
// writable, the cgroup it runs in.
type tree struct {
	pgid   int
	cg     *cgroup // nil without one
	killed bool
}

// newTree returns the tree of a script about to start.
func (l *Local) newTree() (*tree, error) {
	cg, err := l.newCgroup()
	if err != nil {
		return nil, err
	}
	return &tree{cg: cg}, nil
}

// prepare makes the script the leader of a new process group, so that the
// group reaches every process it starts (unless one leaves it with setsid),
// starts it in its cgroup, which reaches them all, and has it killed when
// the worker dies.
func (t *tree) prepare(cmd *exec.Cmd) {
	attr := &syscall.SysProcAttr{Setpgid: true}
	dieWithWorker(attr)
	t.cg.prepare(attr)
	cmd.SysProcAttr = attr
}

// retryStart tells whether a start that failed with err is to be tried
// again (prepared again): the kernel cannot start a process right into a
// cgroup.
func (t *tree) retryStart(err error) bool { return t.cg.retryStart(err) }

// started completes the tree once the script has started.
func (t *tree) started(cmd *exec.Cmd) error {
	t.pgid = cmd.Process.Pid
	return t.cg.started(cmd.Process.Pid)
}

// terminate sends SIGTERM to the whole group, and to the processes of the
// cgroup that left it.
func (t *tree) terminate() error {
	err := t.signal(syscall.SIGTERM)
	t.cg.terminate(t.pgid)
	return err
}

// kill sends SIGKILL to the whole group and to every process of the cgroup.
func (t *tree) kill() error {
	t.killed = true
	err := t.signal(syscall.SIGKILL)
	t.cg.kill()
	return err
}

// release removes the cgroup once the script has ended: after a kill, once
// the last of its processes has died (waiting a bounded time).
func (t *tree) release() { t.cg.release(t.killed) }

func (t *tree) signal(sig syscall.Signal) error {
	err := syscall.Kill(-t.pgid, sig)
	if errors.Is(err, syscall.ESRCH) {
		return errGone
	}
	return err
}
