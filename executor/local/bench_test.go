//go:build unix

package local_test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/postrotate/postrotate/executor"
	"github.com/postrotate/postrotate/executor/local"
)

const benchScript = "IFS= read -r line\necho ok\n"

var benchStdin = []byte("eyJuZXdQYXNzd29yZCI6ICJiZW5jaCJ9\n")

// BenchmarkLocalRun runs a trivial /bin/sh script through Local.Run: run
// directory, script file, minimal environment, process group, masking.
func BenchmarkLocalRun(b *testing.B) {
	benchLocal(b, local.New(local.Options{TempDir: b.TempDir()}))
}

// BenchmarkLocalRunNoCgroup is BenchmarkLocalRun where the script gets no
// cgroup of its own (cgroup v2 not writable): the difference is the cgroup's
// cost.
func BenchmarkLocalRunNoCgroup(b *testing.B) {
	benchLocal(b, local.NewWithoutCgroup(local.Options{TempDir: b.TempDir()}))
}

func benchLocal(b *testing.B, l *local.Local) {
	job := executor.Job{
		RotationID: "rot-bench", Step: 1, Attempt: 1,
		Script:  executor.Script{Name: "bench.sh", Content: []byte(benchScript)},
		Stdin:   benchStdin,
		Secrets: []string{"bench"},
	}
	ctx := context.Background()
	for b.Loop() {
		res, err := l.Run(ctx, job)
		if err != nil || !res.Success() || res.Stdout != "ok\n" {
			b.Fatalf("%v %+v", err, res)
		}
	}
}

// BenchmarkDirectExec runs the same script with exec.Command directly, as
// the baseline of BenchmarkLocalRun.
func BenchmarkDirectExec(b *testing.B) {
	path := filepath.Join(b.TempDir(), "bench.sh")
	if err := os.WriteFile(path, []byte(benchScript), 0o700); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		cmd := exec.Command("/bin/sh", path)
		cmd.Stdin = bytes.NewReader(benchStdin)
		out, err := cmd.Output()
		if err != nil || string(out) != "ok\n" {
			b.Fatalf("%v %q", err, out)
		}
	}
}
