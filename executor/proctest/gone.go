package proctest

import (
	"testing"
	"time"
)

// WaitGone waits until none of pids runs on this machine (see [Alive]),
// and fails t when some still run after within.
func WaitGone(t testing.TB, pids []int, within time.Duration) {
	t.Helper()
	WaitGoneWith(t, Alive, pids, within)
}

// WaitGoneWith is [WaitGone] with alive telling whether a process runs: on
// the machine a remote executor runs scripts on, for instance. An error
// from alive fails t.
func WaitGoneWith(t testing.TB, alive func(pid int) (bool, error), pids []int, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		var left []int
		for _, pid := range pids {
			ok, err := alive(pid)
			if err != nil {
				t.Fatalf("is %d alive: %v", pid, err)
			}
			if ok {
				left = append(left, pid)
			}
		}
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("processes %v of %v still run after %s", left, pids, within)
		}
		<-tick.C
	}
}
