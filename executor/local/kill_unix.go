//go:build unix

package local

import (
	"errors"
	"os/exec"
	"syscall"
)

// graceful tells that the tree can be asked to stop before it is killed.
const graceful = true

// tree is the process group a script leads.
type tree struct{ pgid int }

// prepare makes the script the leader of a new process group, so that the
// group reaches every process it starts (unless one leaves it with setsid).
func prepare(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
}

// track returns the tree of a started script.
func track(cmd *exec.Cmd) (*tree, error) {
	return &tree{pgid: cmd.Process.Pid}, nil
}

// terminate sends SIGTERM to the whole group.
func (t *tree) terminate() error { return t.signal(syscall.SIGTERM) }

// kill sends SIGKILL to the whole group.
func (t *tree) kill() error { return t.signal(syscall.SIGKILL) }

// release frees what track acquired; nothing on Unix.
func (t *tree) release() {}

func (t *tree) signal(sig syscall.Signal) error {
	err := syscall.Kill(-t.pgid, sig)
	if errors.Is(err, syscall.ESRCH) {
		return errGone
	}
	return err
}
