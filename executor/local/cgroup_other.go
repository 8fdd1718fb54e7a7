//go:build unix && !linux

package local

import (
	"fmt"
	"runtime"
	"syscall"
)

// Without cgroups (and without a parent-death signal) a script's process
// group is all that is killed; these stand in for cgroup_linux.go and
// pdeathsig_linux.go.

type cgroup struct{}

func (*Local) newCgroup() (*cgroup, error)   { return nil, nil }
func (*cgroup) prepare(*syscall.SysProcAttr) {}
func (*cgroup) retryStart(error) bool        { return false }
func (*cgroup) started(int) error            { return nil }
func (*cgroup) terminate(int)                {}
func (*cgroup) kill()                        {}
func (*cgroup) release(bool)                 {}

func dieWithWorker(*syscall.SysProcAttr) {}

func containment() error { return fmt.Errorf("%w: %s has no cgroups", ErrNoCgroup, runtime.GOOS) }

func sweep() (int, error) { return 0, nil }
