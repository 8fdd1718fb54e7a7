//go:build !unix

package proctest

import (
	"errors"
	"fmt"
	"runtime"
)

// Supported tells whether [Alive] and [Kill] can look at the processes of
// this system: on Unix.
const Supported = false

// Alive returns an error wrapping errors.ErrUnsupported: there is no
// process check on this system.
func Alive(int) (bool, error) {
	return false, fmt.Errorf("proctest: no process check on %s: %w", runtime.GOOS, errors.ErrUnsupported)
}

// Kill does nothing: there is no process check on this system.
func Kill(int) {}
