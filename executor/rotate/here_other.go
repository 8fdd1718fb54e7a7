//go:build !windows

package rotate

import (
	"context"

	"github.com/postrotate/postrotate/executor"
)

// runHere runs the Linux rotator's job on this machine.
func (r *Rotator) runHere(ctx context.Context, job executor.Job) (executor.Result, error) {
	return r.local.Run(ctx, job)
}
