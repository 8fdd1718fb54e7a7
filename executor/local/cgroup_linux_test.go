package local_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/postrotate/postrotate/executor"
	"github.com/postrotate/postrotate/executor/executortest"
	"github.com/postrotate/postrotate/executor/local"
	"github.com/postrotate/postrotate/executor/proctest"
)

// requireCgroup skips a test where scripts run without their own cgroup,
// saying why ("cgroup v2 not writable: ...").
func requireCgroup(t *testing.T) {
	t.Helper()
	if err := local.Containment(); err != nil {
		t.Skip(err.Error())
	}
}

func requireSetsid(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("setsid"); err != nil {
		t.Skipf("setsid (util-linux) not installed: %v", err)
	}
}

// cgroupVariants are the two ways a script gets into its cgroup.
var cgroupVariants = []struct {
	name string
	new  func(local.Options) *local.Local
	// wait is a script prefix that waits until the script is in its
	// cgroup: moved in after it started, a process it forked before is
	// not.
	wait string
}{
	{"StartedInCgroup", local.New, ""},
	{"MovedIntoCgroup", local.NewCgroupByProcs, "until grep -q /run- /proc/$$/cgroup; do :; done\n"},
}

func TestConformanceCgroupByProcs(t *testing.T) {
	requireCgroup(t)
	executortest.Run(t, executortest.Harness{
		New: func(t *testing.T) executor.Executor {
			return local.NewCgroupByProcs(local.Options{TempDir: t.TempDir(), KillGrace: testKillGrace})
		},
		KillGrace:      testKillGrace,
		TermBeforeKill: true,
	})
}

// readPID reads the pid a script wrote to file name in dir, and kills it at
// cleanup whatever the test found.
func readPID(t *testing.T, dir, name string) int {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGKILL) })
	return pid
}

// waitPID waits until a script wrote its pid to file name in dir and
// returns it; it fails when ended is closed first or after 10s.
func waitPID(t *testing.T, dir, name string, ended <-chan struct{}) int {
	t.Helper()
	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		if _, err := os.Stat(filepath.Join(dir, name)); err == nil {
			return readPID(t, dir, name)
		}
		select {
		case <-ended:
			t.Fatalf("ended before writing %s", name)
		case <-deadline.C:
			t.Fatalf("no %s within 10s", name)
		case <-tick.C:
		}
	}
}

func TestTimeoutKillsSetsidChild(t *testing.T) {
	t.Parallel()
	requireCgroup(t)
	requireSetsid(t)
	for _, v := range cgroupVariants {
		t.Run(v.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			l := v.new(local.Options{TempDir: t.TempDir(), KillGrace: testKillGrace, Env: []string{"PIDDIR=" + dir}})
			job := shJob("setsid.sh", v.wait+setsidScript)
			job.Script.Timeout = 3 * time.Second
			res := run(t, l, job)
			if !res.TimedOut || res.Stdout != "ready\n" {
				t.Fatalf("timed out %v, stdout %q, stderr %q; want a timeout after the setsid child started", res.TimedOut, res.Stdout, res.Stderr)
			}
			for _, name := range []string{"script", "child", "sleep"} {
				if pid := readPID(t, dir, name); alive(pid) {
					t.Errorf("%s %d outlived the timeout kill", name, pid)
				}
			}
		})
	}
}

func TestCancelKillsSetsidChild(t *testing.T) {
	t.Parallel()
	requireCgroup(t)
	requireSetsid(t)
	for _, v := range cgroupVariants {
		t.Run(v.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			l := v.new(local.Options{TempDir: t.TempDir(), KillGrace: testKillGrace, Env: []string{"PIDDIR=" + dir}})
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			type outcome struct {
				res executor.Result
				err error
			}
			ended := make(chan struct{})
			out := make(chan outcome, 1)
			go func() {
				defer close(ended)
				res, err := l.Run(ctx, shJob("setsid.sh", v.wait+setsidScript))
				out <- outcome{res, err}
			}()
			sleep := waitPID(t, dir, "sleep", ended)
			cancel() // as a worker's hard stop does
			o := <-out
			if !errors.Is(o.err, context.Canceled) {
				t.Fatalf("Run error %v, result %+v; want a cancelled run", o.err, o.res)
			}
			for _, pid := range []int{readPID(t, dir, "script"), readPID(t, dir, "child"), sleep} {
				if alive(pid) {
					t.Errorf("process %d outlived the cancellation", pid)
				}
			}
		})
	}
}

func TestScriptRunsInItsOwnCgroup(t *testing.T) {
	t.Parallel()
	requireCgroup(t)
	for _, v := range cgroupVariants {
		t.Run(v.name, func(t *testing.T) {
			t.Parallel()
			l := v.new(local.Options{TempDir: t.TempDir()})
			res := run(t, l, shJob("cgroup.sh", v.wait+"grep ^0:: /proc/$$/cgroup\n"))
			path, ok := strings.CutPrefix(strings.TrimSpace(res.Stdout), "0::")
			if !res.Success() || !ok {
				t.Fatalf("exit %d, stdout %q, stderr %q", res.ExitCode, res.Stdout, res.Stderr)
			}
			if !strings.Contains(path, fmt.Sprintf("/postrotate-%d-", os.Getpid())) || !strings.Contains(path, "/run-") {
				t.Errorf("the script ran in cgroup %s, want one of its own under this process's", path)
			}
			dir, err := local.CgroupDir(path)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("cgroup %s is still there after the run: %v", dir, err)
			}
		})
	}
}

func TestDaemonLeftByScriptKeepsRunning(t *testing.T) {
	t.Parallel()
	requireCgroup(t)
	requireSetsid(t)
	l, _ := setup(t, local.Options{})
	res := run(t, l, shJob("daemon.sh", "setsid sleep 300 </dev/null >/dev/null 2>&1 &\necho \"pid $!\"\n"))
	pid := pids(t, res.Stdout, 1)[0]
	if !res.Success() || !alive(pid) {
		t.Fatalf("exit %d, error %q, daemon alive %v; want a success and the daemon running", res.ExitCode, res.Error, alive(pid))
	}
	own, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	daemon, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(cgroupV2Line(daemon), cgroupV2Line(own)) {
		t.Errorf("the daemon is in cgroup %s, want the worker's own %s", cgroupV2Line(daemon), cgroupV2Line(own))
	}
}

func cgroupV2Line(procCgroup []byte) []byte {
	for line := range bytes.Lines(procCgroup) {
		if bytes.HasPrefix(line, []byte("0::")) {
			return bytes.TrimSpace(line)
		}
	}
	return nil
}

// TestWorkerDeathKillsScript kills a worker (a helper process running
// setsidScript) with SIGKILL: its script dies at once; what the script
// started is killed by the next worker's Sweep.
func TestWorkerDeathKillsScript(t *testing.T) {
	t.Parallel()
	requireSetsid(t)
	cg := ""
	if local.Containment() == nil {
		cg = testCgroup(t)
	}
	dir := t.TempDir()
	var stderr bytes.Buffer
	worker := startHelper(t, cg, "run", dir, nil, &stderr)
	ended := make(chan struct{})
	waited := make(chan error, 1)
	go func() {
		defer close(ended)
		waited <- worker.Wait()
	}()
	sleep := waitPID(t, dir, "sleep", ended)
	script, child := readPID(t, dir, "script"), readPID(t, dir, "child")
	if err := worker.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-ended
	if err := <-waited; err == nil {
		t.Fatalf("the helper exited by itself; stderr %q", stderr.String())
	}
	proctest.WaitGone(t, []int{script}, 10*time.Second)

	if cg == "" {
		t.Skipf("%v: the sweep of what the script left running is not checked", local.Containment())
	}
	if !alive(child) || !alive(sleep) {
		t.Fatalf("setsid child %d or sleep %d died with the worker: nothing left for the sweep to check", child, sleep)
	}
	checkSweep(t, cg, dir, worker.Process.Pid, child, sleep)
}

// checkSweep runs Sweep in a helper process and checks that it killed the
// setsid child and the sleep that the script of the dead worker workerPID
// left, and removed the worker's cgroups under cg.
func checkSweep(t *testing.T, cg, dir string, workerPID, child, sleep int) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	sweeper := startHelper(t, cg, "sweep", dir, &stdout, &stderr)
	if err := sweeper.Wait(); err != nil {
		t.Fatalf("sweep: %v; stderr %q", err, stderr.String())
	}
	// The setsid child and the sleep the script was waiting for.
	var killed int
	if _, err := fmt.Sscanf(stdout.String(), "killed %d\n", &killed); err != nil || killed != 2 {
		t.Errorf("sweep printed %q, want killed 2", stdout.String())
	}
	for _, pid := range []int{child, sleep} {
		if alive(pid) {
			t.Errorf("process %d outlived the sweep", pid)
		}
	}
	entries, err := os.ReadDir(cg)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.IsDir() && strings.HasPrefix(e.Name(), fmt.Sprintf("postrotate-%d-", workerPID)) {
			t.Errorf("the dead worker's cgroup %s is still there", e.Name())
		}
	}
}

var testCgroups atomic.Int64

// testCgroup creates a cgroup beside this test process for helper processes
// to run in, so that no other process's Sweep (another test binary's) reaches
// what they leave; it is removed at cleanup with what runs in it.
func testCgroup(t *testing.T) string {
	t.Helper()
	own, err := local.OwnCgroup()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(own, fmt.Sprintf("localtest-%d-%d", os.Getpid(), testCgroups.Add(1)))
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := local.DrainCgroup(dir); err != nil {
			t.Error(err)
		}
		if err := local.RemoveCgroup(dir); err != nil {
			t.Error(err)
		}
	})
	return dir
}

// startHelper starts this test binary again as a helper process in mode,
// in cgroup cg unless it is "".
func startHelper(t *testing.T, cg, mode, dir string, stdout, stderr *bytes.Buffer) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"="+mode, "PIDDIR="+dir)
	if stdout != nil {
		cmd.Stdout = stdout
	}
	cmd.Stderr = stderr
	if cg != "" {
		f, err := os.Open(cg)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(f.Fd())}
	}
	err := cmd.Start()
	if cg != "" && (errors.Is(err, syscall.ENOSYS) || errors.Is(err, syscall.E2BIG) || errors.Is(err, syscall.EINVAL)) {
		t.Skipf("the kernel cannot start a process into a cgroup (clone3 with CLONE_INTO_CGROUP, Linux 5.7): %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	return cmd
}
