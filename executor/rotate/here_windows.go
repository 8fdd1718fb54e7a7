//go:build windows

package rotate

import (
	"context"
	"fmt"
	"time"

	"github.com/postrotate/postrotate/executor"
)

// runHere refuses: a Windows worker has no chpasswd. A Linux rotation with
// a Target works, over SSH.
func (r *Rotator) runHere(context.Context, executor.Job) (executor.Result, error) {
	now := time.Now()
	res := executor.Result{ExitCode: -1, StartedAt: now, FinishedAt: now}
	return res, fmt.Errorf("a linux password on this machine is not supported on windows (give the rotation a target): %w", ErrUnsupported)
}
