//go:build unix

package proctest

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"runtime"
	"syscall"
)

// Supported tells whether [Alive] and [Kill] can look at the processes of
// this system: on Unix.
const Supported = true

// Alive reports whether process pid runs on this machine. A zombie counts
// as gone: it has ended and only waits to be reaped by its new parent,
// which in a container may never come.
func Alive(pid int) (bool, error) {
	if runtime.GOOS == "linux" {
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if errors.Is(err, fs.ErrNotExist) {
			return false, nil
		}
		if err == nil {
			// pid (comm) state ...: comm may hold anything, state follows the last ')'.
			if i := bytes.LastIndexByte(stat, ')'); i >= 0 && i+2 < len(stat) {
				return stat[i+2] != 'Z' && stat[i+2] != 'X', nil
			}
		}
	}
	err := syscall.Kill(pid, 0)
	switch {
	case err == nil, errors.Is(err, syscall.EPERM):
		return true, nil
	case errors.Is(err, syscall.ESRCH):
		return false, nil
	}
	return false, fmt.Errorf("signal 0 to %d: %w", pid, err)
}

// Kill kills process pid on this machine, if it still runs: what a test
// left behind, at its cleanup.
func Kill(pid int) { _ = syscall.Kill(pid, syscall.SIGKILL) }
