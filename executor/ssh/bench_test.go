//go:build unix

package ssh_test

import (
	"context"
	"testing"

	"github.com/postrotate/postrotate/executor/ssh"
)

// BenchmarkSSHRun runs a trivial script per op over a reused connection to
// a loopback sshd: run directory and upload, the script's session, removal.
func BenchmarkSSHRun(b *testing.B) {
	f := setup(b, ssh.Options{})
	job := f.job("IFS= read -r line\necho ok\n")
	job.Stdin = []byte("eyJuZXdQYXNzd29yZCI6ICJiZW5jaCJ9\n")
	job.Secrets = []string{"bench"}
	ctx := context.Background()
	for b.Loop() {
		res, err := f.ssh.Run(ctx, job)
		if err != nil || !res.Success() || res.Stdout != "ok\n" {
			b.Fatalf("%v %+v", err, res)
		}
	}
	if n := f.dials.Load(); n != 1 {
		b.Errorf("%d dials, want 1", n)
	}
}
