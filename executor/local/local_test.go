//go:build unix

package local_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/postrotate/postrotate/executor"
	"github.com/postrotate/postrotate/executor/executortest"
	"github.com/postrotate/postrotate/executor/local"
	"github.com/postrotate/postrotate/executor/proctest"
)

func TestMain(m *testing.M) {
	if mode := os.Getenv(helperEnv); mode != "" {
		os.Exit(helper(mode))
	}
	goleak.VerifyTestMain(m)
}

// helperEnv, set in the environment of this test binary run again, makes it
// a helper process: a worker for a test to kill.
const helperEnv = "POSTROTATE_LOCAL_TEST_HELPER"

// helper runs as a helper process. Mode "run" runs setsidScript, with
// PIDDIR from its own environment, until it is killed; mode "sweep" calls
// Sweep and prints "killed <n>".
func helper(mode string) int {
	switch mode {
	case "run":
		l := local.New(local.Options{Env: []string{"PIDDIR=" + os.Getenv("PIDDIR")}})
		job := shJob("setsid.sh", setsidScript)
		job.Script.Timeout = 10 * time.Minute
		res, err := l.Run(context.Background(), job)
		fmt.Fprintf(os.Stderr, "the script ended before the helper was killed: %+v, %v\n", res, err)
	case "sweep":
		n, err := local.Sweep()
		if err == nil {
			fmt.Printf("killed %d\n", n)
			return 0
		}
		fmt.Fprintln(os.Stderr, err)
	default:
		fmt.Fprintf(os.Stderr, "unknown %s %q\n", helperEnv, mode)
	}
	return 1
}

// setsidScript starts a child that leaves the script's process group with
// setsid, then a sleep in the background; the child, the script and the
// sleep write their pids to files "child", "script" and "sleep" in $PIDDIR,
// then the script prints "ready" and all hang.
const setsidScript = `setsid sh -c 'echo $$ > "$PIDDIR/child.tmp" && mv "$PIDDIR/child.tmp" "$PIDDIR/child"; exec sleep 300' </dev/null >/dev/null 2>&1 &
echo $$ > "$PIDDIR/script.tmp" && mv "$PIDDIR/script.tmp" "$PIDDIR/script"
while [ ! -e "$PIDDIR/child" ]; do sleep 0.01; done
sleep 300 &
echo $! > "$PIDDIR/sleep.tmp" && mv "$PIDDIR/sleep.tmp" "$PIDDIR/sleep"
echo ready
wait
`

const testKillGrace = time.Second

// setup returns a Local executor whose run directories go under a test
// directory, returned too.
func setup(t *testing.T, opts local.Options) (*local.Local, string) {
	t.Helper()
	if opts.TempDir == "" {
		opts.TempDir = t.TempDir()
	}
	if opts.KillGrace == 0 {
		opts.KillGrace = testKillGrace
	}
	return local.New(opts), opts.TempDir
}

func run(t *testing.T, l *local.Local, job executor.Job) executor.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res, err := l.Run(ctx, job)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	return res
}

func shJob(name, script string) executor.Job {
	return executor.Job{
		RotationID: "rot-local", Step: 2, Attempt: 1,
		Script: executor.Script{Name: name, Content: []byte(script)},
	}
}

func TestConformance(t *testing.T) {
	executortest.Run(t, executortest.Harness{
		New: func(t *testing.T) executor.Executor {
			l, _ := setup(t, local.Options{})
			return l
		},
		KillGrace:      testKillGrace,
		TermBeforeKill: true,
	})
}

// TestConformanceWithoutCgroup runs the suite where scripts run without
// their own cgroup, as where cgroup v2 is not writable: the process group
// is killed.
func TestConformanceWithoutCgroup(t *testing.T) {
	executortest.Run(t, executortest.Harness{
		New: func(t *testing.T) executor.Executor {
			opts := local.Options{TempDir: t.TempDir(), KillGrace: testKillGrace}
			return local.NewWithoutCgroup(opts)
		},
		KillGrace:      testKillGrace,
		TermBeforeKill: true,
	})
}

// assertEmpty checks that no run directory is left under parent.
func assertEmpty(t *testing.T, parent string) {
	t.Helper()
	entries, err := os.ReadDir(parent)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		t.Errorf("left behind: %s", e.Name())
	}
}

func TestRunDirectory(t *testing.T) {
	t.Parallel()
	const script = `ls -ld "$PWD" "$0"
printf 'pwd=%s\ntmpdir=%s\n' "$PWD" "$TMPDIR"
`
	for _, tc := range []struct {
		name    string
		script  string
		timeout time.Duration
	}{
		{"Completed", script, 0},
		{"Failed", script + "exit 9\n", 0},
		{"TimedOut", script + "sleep 300\n", 500 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			l, parent := setup(t, local.Options{})
			job := shJob("dir.sh", tc.script)
			job.Script.Timeout = tc.timeout
			res := run(t, l, job)
			lines := strings.Split(res.Stdout, "\n")
			if len(lines) < 4 {
				t.Fatalf("stdout %q, stderr %q", res.Stdout, res.Stderr)
			}
			for _, l := range lines[:2] {
				switch {
				case strings.HasPrefix(l, "d") && !strings.HasPrefix(l, "drwx------"),
					strings.HasPrefix(l, "-") && !strings.HasPrefix(l, "-rwx------"):
					t.Errorf("want run directory 0700 and script 0700, got %q", l)
				}
			}
			dir := strings.TrimPrefix(lines[2], "pwd=")
			if filepath.Dir(dir) != parent || lines[3] != "tmpdir="+dir {
				t.Errorf("pwd %q, %q; want a directory under %s that is also TMPDIR", dir, lines[3], parent)
			}
			if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("run directory %s still there: %v", dir, err)
			}
			assertEmpty(t, parent)
		})
	}
}

func TestEnvironmentIsMinimal(t *testing.T) {
	// t.Setenv forbids t.Parallel.
	t.Setenv("POSTROTATE_TEST_LEAK", "must-not-be-seen")
	l, _ := setup(t, local.Options{Env: []string{"EXTRA=1", "POSTROTATE_STEP=overridden"}})
	job := shJob("env.sh", "env\n")
	job.Step = 7
	res := run(t, l, job)
	allowed := map[string]bool{"EXTRA": true, "POSTROTATE_ROTATION_ID": true, "POSTROTATE_STEP": true, "POSTROTATE_ATTEMPT": true, "TMPDIR": true,
		"PWD": true, "SHLVL": true, "OLDPWD": true, "_": true} // the last ones sh sets itself
	for _, name := range local.DefaultInheritEnv() {
		allowed[name] = true
	}
	seen := map[string]string{}
	for line := range strings.Lines(res.Stdout) {
		name, value, _ := strings.Cut(strings.TrimSuffix(line, "\n"), "=")
		seen[name] = value
		if !allowed[name] {
			t.Errorf("script sees %s, not in the minimal environment", line)
		}
	}
	if _, ok := seen["POSTROTATE_TEST_LEAK"]; ok {
		t.Error("the worker's environment leaked into the script")
	}
	if seen["PATH"] != os.Getenv("PATH") || seen["EXTRA"] != "1" || seen["POSTROTATE_STEP"] != "7" {
		t.Errorf("PATH %q, EXTRA %q, POSTROTATE_STEP %q", seen["PATH"], seen["EXTRA"], seen["POSTROTATE_STEP"])
	}
}

func TestInterpreters(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, file, command, content string
		wantPrefix                   string // of Result.Command before the script path
		wantStdout                   string
	}{
		{"ShebangRunsItself", "x.py", "", "#!/bin/sh\necho shebang\n", "", "shebang\n"},
		{"PythonByExtension", "x.py", "", "import sys\nprint(sys.version_info[0])\n", "python3 ", "3\n"},
		{"UpperCasePythonExtension", "X.PY", "", "print('py')\n", "python3 ", "py\n"},
		{"ShellByDefault", "x.sh", "", "echo sh\n", "/bin/sh ", "sh\n"},
		{"ShellWithoutExtension", "noext", "", "echo sh\n", "/bin/sh ", "sh\n"},
		{"CommandPrefix", "x.sh", "/usr/bin/env python3 -u", "print('cmd')\n", "/usr/bin/env python3 -u ", "cmd\n"},
		{"CommandBeatsShebang", "x", "/bin/sh", "#!/nonexistent/interpreter\necho cmd\n", "/bin/sh ", "cmd\n"},
		{"PathInNameIgnored", "../../etc/x.sh", "", "echo base\n", "/bin/sh ", "base\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			l, parent := setup(t, local.Options{})
			job := shJob(tc.file, tc.content)
			job.Script.Command = tc.command
			res := run(t, l, job)
			if !res.Success() || res.Stdout != tc.wantStdout {
				t.Fatalf("exit %d, error %q, stdout %q, stderr %q; want stdout %q", res.ExitCode, res.Error, res.Stdout, res.Stderr, tc.wantStdout)
			}
			path, ok := strings.CutPrefix(res.Command, tc.wantPrefix)
			if !ok || !filepath.IsAbs(path) || filepath.Dir(filepath.Dir(path)) != parent || filepath.Base(path) != executor.ScriptFileName(tc.file) {
				t.Errorf("command %q, want %q then the script's path under %s", res.Command, tc.wantPrefix, parent)
			}
		})
	}
}

func TestInterpreterNotFound(t *testing.T) {
	t.Parallel()
	l, parent := setup(t, local.Options{})
	job := shJob("x.sh", "echo never\n")
	job.Script.Command = "postrotate-no-such-interpreter --flag"
	res, err := l.Run(context.Background(), job)
	if !errors.Is(err, exec.ErrNotFound) {
		t.Fatalf("Run error = %v, want exec.ErrNotFound", err)
	}
	if !strings.Contains(err.Error(), "postrotate-no-such-interpreter") || !strings.Contains(res.Error, "postrotate-no-such-interpreter") {
		t.Errorf("error %q / result error %q should name the interpreter", err, res.Error)
	}
	if res.ExitCode != -1 || res.Success() {
		t.Errorf("exit %d, success %v", res.ExitCode, res.Success())
	}
	assertEmpty(t, parent)
}

func TestCanceledBeforeStart(t *testing.T) {
	t.Parallel()
	l, parent := setup(t, local.Options{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	res, err := l.Run(ctx, shJob("x.sh", "echo never\n"))
	if !errors.Is(err, context.Canceled) || res.ExitCode != -1 || res.Error == "" || res.Stdout != "" {
		t.Errorf("err %v, result %+v; want a cancelled run that did not start", err, res)
	}
	assertEmpty(t, parent)
}

var pidLine = regexp.MustCompile(`(?m)^pid (\d+)$`)

// pids returns the pids a script printed, to be killed at cleanup whatever
// the test found.
func pids(t *testing.T, stdout string, want int) []int {
	t.Helper()
	var out []int
	for _, m := range pidLine.FindAllStringSubmatch(stdout, -1) {
		pid, _ := strconv.Atoi(m[1])
		out = append(out, pid)
		t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGKILL) })
	}
	if len(out) != want {
		t.Fatalf("want %d pids in %q", want, stdout)
	}
	return out
}

// alive reports whether pid runs (a zombie does not).
func alive(pid int) bool {
	ok, _ := proctest.Alive(pid)
	return ok
}

func TestKillEscalatesToSIGKILL(t *testing.T) {
	t.Parallel()
	l, parent := setup(t, local.Options{KillGrace: 200 * time.Millisecond})
	// SIGTERM is ignored by the script and, inherited, by its child.
	job := shJob("stubborn.sh", `trap '' TERM
echo "pid $$"
sleep 300 &
echo "pid $!"
echo before
wait
`)
	job.Script.Timeout = 500 * time.Millisecond
	res := run(t, l, job)
	if !res.TimedOut || res.ExitCode != -1 || !strings.Contains(res.Error, "timed out after 500ms") {
		t.Errorf("timed out %v, exit %d, error %q", res.TimedOut, res.ExitCode, res.Error)
	}
	proctest.WaitGone(t, pids(t, res.Stdout, 2), 10*time.Second)
	assertEmpty(t, parent)
}

func TestBackgroundChildHoldingStdout(t *testing.T) {
	t.Parallel()
	l, _ := setup(t, local.Options{WaitDelay: 100 * time.Millisecond})
	res := run(t, l, shJob("daemon.sh", "sleep 300 &\necho \"pid $!\"\necho done\n"))
	if !res.Success() || !strings.HasSuffix(res.Stdout, "done\n") {
		t.Errorf("exit %d, error %q, stdout %q; want a success despite the open pipe", res.ExitCode, res.Error, res.Stdout)
	}
	pids(t, res.Stdout, 1) // killed at cleanup
}

func TestSignalledScriptIsNotSuccess(t *testing.T) {
	t.Parallel()
	l, _ := setup(t, local.Options{})
	res := run(t, l, shJob("self.sh", "echo before\nkill -KILL $$\n"))
	if res.Success() || res.ExitCode != -1 || res.Error == "" || res.TimedOut || res.Stdout != "before\n" {
		t.Errorf("result %+v; want a failure with an error", res)
	}
}

func TestMaskedCommandAndError(t *testing.T) {
	t.Parallel()
	l, _ := setup(t, local.Options{})
	const secret = "interp-secret-value"
	job := shJob("x.sh", "echo never\n")
	job.Script.Command = "/nonexistent/" + secret
	job.Secrets = []string{secret}
	res, err := l.Run(context.Background(), job)
	if err == nil {
		t.Fatal("Run succeeded with a missing interpreter")
	}
	if strings.Contains(res.Command, secret) || strings.Contains(res.Error, secret) || strings.Contains(err.Error(), secret) {
		t.Errorf("command %q / result error %q / error %q hold the secret", res.Command, res.Error, err)
	}
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("error %v does not wrap the cause", err)
	}
}
