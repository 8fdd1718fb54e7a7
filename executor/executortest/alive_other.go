//go:build !unix

package executortest

// localAlive is nil where the suite has no way to look at a local process:
// the process-tree checks then need Harness.Alive.
var localAlive func(pid int) (bool, error)

func localKill(int) {}
