package local

import "errors"

// ErrNoCgroup is wrapped by [Containment]'s error when scripts run without
// their own cgroup.
var ErrNoCgroup = errors.New("cgroup v2 not writable")

// Containment tells whether a timeout or a stop kills every process a
// script started, including one that left its process group with setsid:
// nil on Linux where cgroup v2 is writable (each script runs in its own
// cgroup) and on Windows (Job Object); otherwise an error wrapping
// [ErrNoCgroup] that says why, and only the script's process group is
// killed. It is decided once per process, at the first call of [New] or
// Containment, and does not change afterwards.
func Containment() error { return containment() }

// Sweep kills what the scripts of dead worker processes left running in
// their cgroups, and removes those cgroups: a worker killed with SIGKILL
// leaves them behind (its scripts die with it, but not what they started).
// It looks only beside this process's own cgroup, at the cgroups of
// processes that have ended, and returns how many processes it killed.
// Call it before running the first script, so that a restarted worker does
// not run the next step beside the previous one's orphans. Without cgroups
// (see [Containment]) there is nothing to sweep and it returns 0, nil.
func Sweep() (killed int, err error) { return sweep() }
