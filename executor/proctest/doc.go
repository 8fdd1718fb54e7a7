// Package proctest helps the tests that run processes: [WaitGone] waits
// until processes have ended, and a [Buffer] captures a process's output or
// a component's logs while the test reads them.
//
// # Usage
//
//	var logs proctest.Buffer
//	cmd.Stdout, cmd.Stderr = &logs, &logs
//	...
//	proctest.WaitGone(t, pids, 10*time.Second)
package proctest
