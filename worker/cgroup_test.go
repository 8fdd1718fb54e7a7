//go:build linux

package worker

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/postrotate/postrotate/executor"
	"github.com/postrotate/postrotate/executor/local"
	"github.com/postrotate/postrotate/executor/proctest"
	"github.com/postrotate/postrotate/messages"
	"github.com/postrotate/postrotate/worker/workertest"
)

// deadWorkerEnv, set in the environment of this test binary run again,
// makes it a worker process that runs deadWorkerScript until it is killed.
const deadWorkerEnv = "POSTROTATE_WORKER_TEST_DEAD_WORKER"

// deadWorkerScript starts a child that leaves the script's process group
// with setsid, writes its pid to $PIDDIR/child and then the script's to
// $PIDDIR/script, and hangs.
const deadWorkerScript = `setsid sh -c 'echo $$ > "$PIDDIR/child.tmp" && mv "$PIDDIR/child.tmp" "$PIDDIR/child"; exec sleep 300' </dev/null >/dev/null 2>&1 &
while [ ! -e "$PIDDIR/child" ]; do sleep 0.01; done
echo $$ > "$PIDDIR/script.tmp" && mv "$PIDDIR/script.tmp" "$PIDDIR/script"
exec sleep 300
`

// init runs before TestMain: a dead worker to be is not a test run.
func init() {
	if os.Getenv(deadWorkerEnv) == "" {
		return
	}
	l := local.New(local.Options{Env: []string{"PIDDIR=" + os.Getenv("PIDDIR")}})
	res, err := l.Run(context.Background(), executor.Job{
		RotationID: "rot-dead", Step: 1, Attempt: 1,
		Script: executor.Script{Name: "hang.sh", Content: []byte(deadWorkerScript), Timeout: 10 * time.Minute},
	})
	fmt.Fprintf(os.Stderr, "the script ended before its worker was killed: %+v, %v\n", res, err)
	os.Exit(1)
}

// TestStartSweepsDeadWorkersScripts kills a worker process running a script
// with SIGKILL: the script dies with it, and the next worker's Start kills
// what the script started before it runs a task. Not parallel: another
// worker starting in this process meanwhile would sweep first.
func TestStartSweepsDeadWorkersScripts(t *testing.T) {
	if err := local.Containment(); err != nil {
		t.Skip(err.Error()) // "cgroup v2 not writable: ..."
	}
	if _, err := exec.LookPath("setsid"); err != nil {
		t.Skipf("setsid (util-linux) not installed: %v", err)
	}
	dir := t.TempDir()
	var stderr bytes.Buffer
	dead := exec.Command(os.Args[0], "-test.run=^$")
	dead.Env = append(os.Environ(), deadWorkerEnv+"=1", "PIDDIR="+dir)
	dead.Stderr = &stderr
	if err := dead.Start(); err != nil {
		t.Fatal(err)
	}
	ended := make(chan struct{})
	go func() {
		defer close(ended)
		_ = dead.Wait()
	}()
	t.Cleanup(func() {
		_ = dead.Process.Kill()
		<-ended
	})
	script, child := waitPIDFile(t, dir, "script", ended), waitPIDFile(t, dir, "child", ended)
	if err := dead.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-ended
	workertest.Eventually(t, within, "the script dies with its worker", func() bool { return !running(script) })
	if !running(child) {
		t.Fatalf("setsid child %d died with the worker: nothing left for the sweep", child)
	}

	logs := new(proctest.Buffer)
	log := zerolog.New(logs)
	w, _ := setup(t, config{}, func(o *Options) {
		o.Logger = &log
		o.Executors = map[string]executor.Executor{messages.RunnerLocal: local.New(local.Options{TempDir: t.TempDir()})}
	})
	start(t, w)
	if running(child) {
		t.Errorf("setsid child %d of the dead worker's script still runs after Start", child)
	}
	killed := 0
	for line := range strings.Lines(logs.String()) {
		var entry struct {
			Message string `json:"message"`
			Killed  int    `json:"killed"`
		}
		if json.Unmarshal([]byte(line), &entry) == nil && entry.Killed > 0 {
			killed = entry.Killed
		}
	}
	if killed < 1 {
		t.Errorf("no log of the processes killed; logs:\n%s", logs.String())
	}
}

// waitPIDFile waits until a script wrote its pid to file name in dir and
// returns it, to be killed at cleanup whatever the test found; it fails
// when ended is closed first or after 10s.
func waitPIDFile(t *testing.T, dir, name string, ended <-chan struct{}) int {
	t.Helper()
	var data []byte
	workertest.Eventually(t, 10*time.Second, name+" written", func() bool {
		select {
		case <-ended:
			t.Fatalf("the worker ended before its script wrote %s", name)
		default:
		}
		var err error
		data, err = os.ReadFile(filepath.Join(dir, name))
		return err == nil
	})
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGKILL) })
	return pid
}

// running reports whether process pid runs (a zombie does not).
func running(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(stat, ')')
	return i < 0 || i+2 >= len(stat) || stat[i+2] != 'Z'
}
