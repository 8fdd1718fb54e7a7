//go:build unix

package proctest_test

import (
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/postrotate/postrotate/executor/proctest"
)

func TestBufferConcurrent(t *testing.T) {
	t.Parallel()
	var b proctest.Buffer
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 100 {
				_, _ = b.Write([]byte("line\n"))
				_ = b.String()
			}
		})
	}
	wg.Wait()
	if n := strings.Count(b.String(), "line\n"); n != 400 {
		t.Errorf("%d lines, want 400", n)
	}
}

func TestWaitGone(t *testing.T) {
	t.Parallel()
	cmd := exec.Command("sleep", "300")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	t.Cleanup(func() { proctest.Kill(pid) })
	if ok, err := proctest.Alive(pid); !ok || err != nil {
		t.Fatalf("a running sleep: alive %v, %v", ok, err)
	}
	proctest.Kill(pid)
	// Not reaped yet: a zombie counts as gone.
	proctest.WaitGone(t, []int{pid}, 10*time.Second)
	_ = cmd.Wait()
	if ok, err := proctest.Alive(pid); ok || err != nil {
		t.Errorf("a reaped process: alive %v, %v", ok, err)
	}
}
