package executortest

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/postrotate/postrotate/executor"
	"github.com/postrotate/postrotate/executor/proctest"
)

// Harness is what the suite needs to know about the executor under test.
// A zero field means its default.
type Harness struct {
	// New returns the executor under test. Required. It is called once per
	// subtest; subtests run in parallel.
	New func(t *testing.T) executor.Executor
	// KillGrace is the longest the executor takes, once it decides to kill
	// a process tree, until the tree is gone (its SIGTERM to SIGKILL grace).
	// Defaults to 5s; the suite allows 10s more.
	KillGrace time.Duration
	// StartWithin is how long a script may take to start and print its first
	// line. The timeout and cancellation tests fire after it. Defaults to 1s.
	StartWithin time.Duration
	// Alive reports whether process pid is running on the host the scripts
	// run on. Defaults to looking at this machine (Unix), which suits
	// executors running scripts here.
	Alive func(pid int) (bool, error)
	// Python is the Command of the Python script. Defaults to "python3".
	Python string
	// Target, when set, is given to every job of the suite: the remote
	// host of an SSH or WinRM executor.
	Target *executor.Target
	// TermBeforeKill tells that the executor kills a process tree by
	// escalation: SIGTERM to the tree, KillGrace for it to end, then
	// SIGKILL. The suite then checks that a script trapping SIGTERM got it
	// before it was killed. Leave it unset for an executor whose kill is
	// immediate, as on Windows (TerminateProcess, a Job Object, a WinRM
	// Signal terminate, which the fake WinRM server of the winrm tests
	// mirrors with SIGKILL): there is no SIGTERM to escalate from, and the
	// suite checks only that a tree ignoring SIGTERM is gone.
	TermBeforeKill bool

	local bool // Alive is the local check: leftover processes can be killed
}

func (h Harness) withDefaults(t *testing.T) Harness {
	t.Helper()
	if h.New == nil {
		t.Fatal("executortest: Harness.New is required")
	}
	if h.KillGrace <= 0 {
		h.KillGrace = 5 * time.Second
	}
	if h.StartWithin <= 0 {
		h.StartWithin = time.Second
	}
	if h.Alive == nil && proctest.Supported {
		h.Alive = proctest.Alive
		h.local = true
	}
	if h.Python == "" {
		h.Python = "python3"
	}
	return h
}

// Run runs the conformance suite against the executor h.New returns.
func Run(t *testing.T, h Harness) {
	h = h.withDefaults(t)
	for _, tc := range []struct {
		name string
		fn   func(*testing.T, Harness)
	}{
		{"ExitZeroIsSuccess", testExitZero},
		{"ExitThreeIsAResult", testExitThree},
		{"StderrIsSeparate", testStderr},
		{"StdinIsExact", testStdinExact},
		{"KeeperReaders", testKeeperReaders},
		{"TimeoutKillsTree", testTimeout},
		{"CancelKillsTree", testCancel},
		{"KillEscalates", testKillEscalates},
		{"OutputIsCapped", testOutputCapped},
		{"SecretsAreMasked", testSecretsMasked},
		{"CommandHasNoSecret", testCommandHasNoSecret},
		{"Environment", testEnvironment},
		{"StdinNotRead", testStdinNotRead},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(t, h)
		})
	}
}

// runTimeout bounds every Run of the suite, so a hanging executor fails
// instead of blocking the test binary.
const runTimeout = 2 * time.Minute

// shJob returns a job running a POSIX sh script.
func shJob(script string) executor.Job {
	return executor.Job{
		RotationID: "rot-conformance",
		Step:       1,
		Attempt:    1,
		Script:     executor.Script{Name: "script.sh", Content: []byte(script)},
	}
}

// run runs job and fails the test on an error return.
func run(t *testing.T, h Harness, job executor.Job) executor.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), runTimeout)
	defer cancel()
	if job.Target == nil {
		job.Target = h.Target
	}
	res, err := h.New(t).Run(ctx, job)
	if err != nil {
		t.Fatalf("Run: %v (result %+v)", err, res)
	}
	return res
}

// sq quotes s for a POSIX shell.
func sq(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

func testExitZero(t *testing.T, h Harness) {
	res := run(t, h, shJob("echo hello\necho world\n"))
	if !res.Success() || res.ExitCode != 0 || res.Error != "" || res.TimedOut {
		t.Errorf("want success, got exit %d, error %q, timed out %v", res.ExitCode, res.Error, res.TimedOut)
	}
	if res.Stdout != "hello\nworld\n" {
		t.Errorf("stdout = %q, want %q", res.Stdout, "hello\nworld\n")
	}
	if res.Stderr != "" || res.StdoutTruncated || res.StderrTruncated {
		t.Errorf("stderr = %q, truncated %v/%v; want empty, not truncated", res.Stderr, res.StdoutTruncated, res.StderrTruncated)
	}
	switch res.System {
	case "Linux", "Windows", "Darwin":
	default:
		t.Errorf("system = %q, want Linux, Windows or Darwin", res.System)
	}
	if res.Command == "" {
		t.Error("command is empty")
	}
	if res.StartedAt.IsZero() || res.FinishedAt.Before(res.StartedAt) {
		t.Errorf("started at %v, finished at %v", res.StartedAt, res.FinishedAt)
	}
}

func testExitThree(t *testing.T, h Harness) {
	res := run(t, h, shJob("echo partial\necho failing >&2\nexit 3\n"))
	if res.ExitCode != 3 || res.Success() || res.TimedOut || res.Error != "" {
		t.Errorf("got exit %d, success %v, timed out %v, error %q; want exit 3 as a plain result", res.ExitCode, res.Success(), res.TimedOut, res.Error)
	}
	if res.Stdout != "partial\n" || res.Stderr != "failing\n" {
		t.Errorf("stdout %q, stderr %q", res.Stdout, res.Stderr)
	}
}

func testStderr(t *testing.T, h Harness) {
	res := run(t, h, shJob("echo to-out\necho to-err >&2\necho more-out\n"))
	if res.Stdout != "to-out\nmore-out\n" || res.Stderr != "to-err\n" {
		t.Errorf("stdout %q, stderr %q; want them apart", res.Stdout, res.Stderr)
	}
}

func testStdinExact(t *testing.T, h Harness) {
	line, _ := keeperLine(t, "Std!n-Pass", "old")
	for _, tc := range []struct {
		name  string
		stdin string
	}{
		{"KeeperLine", line + "\n"},
		{"Empty", ""},
		{"BinaryNoNewline", "\x00\x01\xfe\xff \t\r\n\r\nlast"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			job := shJob("od -An -tx1 -v\n")
			job.Stdin = []byte(tc.stdin)
			res := run(t, h, job)
			if !res.Success() {
				t.Fatalf("exit %d, error %q, stderr %q", res.ExitCode, res.Error, res.Stderr)
			}
			got, err := hex.DecodeString(strings.Join(strings.Fields(res.Stdout), ""))
			if err != nil {
				t.Fatalf("od output %q: %v", res.Stdout, err)
			}
			if string(got) != tc.stdin {
				t.Errorf("script read %q, want exactly %q", got, tc.stdin)
			}
		})
	}
	t.Run("Large400KiB", func(t *testing.T) {
		// More than an SSH channel window, a pipe or a WinRM envelope
		// holds: the executor must stream or chunk it, byte-exact.
		t.Parallel()
		stdin := make([]byte, 400<<10)
		if _, err := rand.Read(stdin); err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(stdin)
		job := shJob("f=$(mktemp) || exit 9\ncat > \"$f\"\nwc -c < \"$f\"\nsha256sum < \"$f\"\nrm -f \"$f\"\n")
		job.Stdin = stdin
		res := run(t, h, job)
		if !res.Success() {
			t.Fatalf("exit %d, error %q, stderr %q", res.ExitCode, res.Error, res.Stderr)
		}
		fields := strings.Fields(res.Stdout)
		if len(fields) < 2 || fields[0] != strconv.Itoa(len(stdin)) || fields[1] != hex.EncodeToString(sum[:]) {
			t.Errorf("script read %q, want %d bytes with sha256 %x", res.Stdout, len(stdin), sum)
		}
	})
}

// keeper is the JSON object of the payload line, in Keeper's key order.
type keeper struct {
	ProviderRecordUID string `json:"providerRecordUid"`
	ResourceRecordUID string `json:"resourceRecordUid"`
	UserRecordUID     string `json:"userRecordUid"`
	NewPassword       string `json:"newPassword"`
	OldPassword       string `json:"oldPassword"`
	User              string `json:"user"`
	Records           string `json:"records"`
}

// keeperLine builds a payload line by hand (standard base64, padded, no
// newline) and returns it with the JSON it encodes.
func keeperLine(t *testing.T, newPassword, oldPassword string) (line string, js []byte) {
	t.Helper()
	records, err := json.Marshal([]map[string]any{
		{"uid": "cfg-uid", "title": "Local configuration"},
		{"uid": "user-uid", "title": "svc-app", "login": "svc@example.com"},
	})
	if err != nil {
		t.Fatal(err)
	}
	js, err = json.Marshal(keeper{
		ProviderRecordUID: "cfg-uid",
		ResourceRecordUID: "machine-uid",
		UserRecordUID:     "user-uid",
		NewPassword:       newPassword,
		OldPassword:       oldPassword,
		User:              "svc@example.com",
		Records:           base64.StdEncoding.EncodeToString(records),
	})
	if err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(js), js
}

func testKeeperReaders(t *testing.T, h Harness) {
	newPassword := `N3w-P@ss "é" \ /+=` // non-ASCII and JSON-escaped characters
	line, js := keeperLine(t, newPassword, "0ld-P@ss")
	pyWant := "svc@example.com\n" + newPassword + "\nsvc-app\n"
	for _, tc := range []struct {
		name string
		job  executor.Job
		want string
	}{
		{
			name: "PythonForLineInStdin",
			job: executor.Job{Script: executor.Script{Name: "reader.py", Command: h.Python, Content: []byte(`import sys
import base64
import json

params = None
for base64_params in sys.stdin:
    params = json.loads(base64.b64decode(base64_params).decode())
    records = json.loads(base64.b64decode(params.get('records')).decode())
    break

out = params["user"] + "\n" + params["newPassword"] + "\n" + records[1]["title"] + "\n"
sys.stdout.buffer.write(out.encode("utf-8"))
`)}},
			want: pyWant,
		},
		{
			name: "BashReadLine",
			job: executor.Job{Script: executor.Script{Name: "reader.sh", Content: []byte(`#!/usr/bin/env bash
IFS= read -r line
echo "$line" | base64 -d
`)}},
			want: string(js),
		},
		{
			name: "CatBase64Decode",
			job:  executor.Job{Script: executor.Script{Name: "reader.sh", Content: []byte("cat | base64 --decode\n")}},
			want: string(js),
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			job := tc.job
			job.RotationID, job.Step, job.Attempt = "rot-readers", 1, 1
			job.Stdin = []byte(line + "\n")
			res := run(t, h, job)
			if !res.Success() {
				t.Fatalf("exit %d, error %q, stderr %q", res.ExitCode, res.Error, res.Stderr)
			}
			if res.Stdout != tc.want {
				t.Errorf("decoded %q, want %q", res.Stdout, tc.want)
			}
		})
	}
}

// treeScript starts a child and a grandchild, prints their pids and
// "before", then hangs.
const treeScript = `sleep 300 &
echo "pid $!"
( sleep 300 & echo "pid $!"; wait ) &
echo "pid $!"
echo before
sleep 300
echo after
`

var pidLine = regexp.MustCompile(`(?m)^pid (\d+)$`)

// treePIDs returns the want pids a script printed on "pid N" lines.
func treePIDs(t *testing.T, h Harness, stdout string, want int) []int {
	t.Helper()
	var pids []int
	for _, m := range pidLine.FindAllStringSubmatch(stdout, -1) {
		pid, err := strconv.Atoi(m[1])
		if err != nil {
			t.Fatal(err)
		}
		pids = append(pids, pid)
		if h.local {
			t.Cleanup(func() { proctest.Kill(pid) })
		}
	}
	if len(pids) != want {
		t.Fatalf("want %d pids in stdout, got %q", want, stdout)
	}
	return pids
}

// waitGone waits until every pid is gone, failing after the kill grace
// and 10s more.
func waitGone(t *testing.T, h Harness, pids []int) {
	t.Helper()
	if h.Alive == nil {
		t.Log("not checking that the process tree is gone: no Harness.Alive and no local process check on this system")
		return
	}
	proctest.WaitGoneWith(t, h.Alive, pids, h.KillGrace+10*time.Second)
}

func testTimeout(t *testing.T, h Harness) {
	job := shJob(treeScript)
	job.Script.Timeout = h.StartWithin + time.Second
	res := run(t, h, job) // a timeout is a Result, not an error
	if !res.TimedOut || res.ExitCode != -1 || res.Success() || res.Error == "" {
		t.Errorf("got timed out %v, exit %d, success %v, error %q; want a timeout", res.TimedOut, res.ExitCode, res.Success(), res.Error)
	}
	if !strings.Contains(res.Stdout, "before\n") || strings.Contains(res.Stdout, "after") {
		t.Errorf("stdout %q: want the output printed before the kill", res.Stdout)
	}
	waitGone(t, h, treePIDs(t, h, res.Stdout, 3))
}

func testCancel(t *testing.T, h Harness) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stop := time.AfterFunc(h.StartWithin+time.Second, cancel)
	defer stop.Stop()
	job := shJob(treeScript)
	job.Target = h.Target
	res, err := h.New(t).Run(ctx, job)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Run error = %v, want one wrapping context.Canceled", err)
	}
	if res.ExitCode != -1 || res.Success() || res.Error == "" || res.TimedOut {
		t.Errorf("got exit %d, success %v, error %q, timed out %v; want a cancelled run", res.ExitCode, res.Success(), res.Error, res.TimedOut)
	}
	if !strings.Contains(res.Stdout, "before\n") {
		t.Errorf("stdout %q: want the output printed before the kill", res.Stdout)
	}
	waitGone(t, h, treePIDs(t, h, res.Stdout, 3))
}

// stubbornScript prints its pid and traps SIGTERM, saying so on stderr
// when it comes, then waits for ever; it starts a child and a subshell with
// a grandchild, which ignore SIGTERM, and prints their pids and "before".
// Only SIGKILL ends the tree.
const stubbornScript = `trap 'echo "got TERM" >&2' TERM
echo "pid $$"
( trap '' TERM; exec sleep 300 ) &
echo "pid $!"
( trap '' TERM; sleep 300 & echo "pid $!"; wait ) &
echo "pid $!"
echo before
while :; do wait; done
echo after
`

// testKillEscalates checks, at a timeout and at a cancellation, that a
// tree that outlives SIGTERM is killed: Run returns within the kill grace
// and 10s more of the kill's start, and the script, its child, the subshell
// and its grandchild are all gone within the same bound again; with
// TermBeforeKill, that the script got SIGTERM first.
func testKillEscalates(t *testing.T, h Harness) {
	killAfter := h.StartWithin + time.Second
	check := func(t *testing.T, began time.Time, res executor.Result) {
		t.Helper()
		if bound := killAfter + h.KillGrace + 10*time.Second; time.Since(began) > bound {
			t.Errorf("Run returned %s after it began, want within %s: the kill must escalate to SIGKILL after the grace", time.Since(began), bound)
		}
		if !strings.Contains(res.Stdout, "before\n") || strings.Contains(res.Stdout, "after") {
			t.Errorf("stdout %q: want the output printed before the kill", res.Stdout)
		}
		waitGone(t, h, treePIDs(t, h, res.Stdout, 4))
		if h.TermBeforeKill && !strings.Contains(res.Stderr, "got TERM\n") {
			t.Errorf("stderr %q: the script did not get SIGTERM before it was killed", res.Stderr)
		}
	}
	t.Run("Timeout", func(t *testing.T) {
		t.Parallel()
		job := shJob(stubbornScript)
		job.Script.Timeout = killAfter
		began := time.Now()
		res := run(t, h, job)
		if !res.TimedOut || res.ExitCode != -1 || res.Success() || res.Error == "" {
			t.Errorf("got timed out %v, exit %d, success %v, error %q; want a timeout", res.TimedOut, res.ExitCode, res.Success(), res.Error)
		}
		check(t, began, res)
	})
	t.Run("Cancel", func(t *testing.T) {
		t.Parallel()
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		stop := time.AfterFunc(killAfter, cancel)
		defer stop.Stop()
		job := shJob(stubbornScript)
		job.Target = h.Target
		began := time.Now()
		res, err := h.New(t).Run(ctx, job)
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Run error = %v, want one wrapping context.Canceled", err)
		}
		if res.ExitCode != -1 || res.Success() || res.Error == "" || res.TimedOut {
			t.Errorf("got exit %d, success %v, error %q, timed out %v; want a cancelled run", res.ExitCode, res.Success(), res.Error, res.TimedOut)
		}
		check(t, began, res)
	})
}

var omitted = regexp.MustCompile(`\n\[postrotate: (\d+) bytes omitted\]\n`)

// checkCapped checks a capped stream: head and tail kept around the marker,
// and kept plus omitted bytes add up to what was written.
func checkCapped(t *testing.T, stream, text string, truncated bool, total int, head, tail string) {
	t.Helper()
	if !truncated {
		t.Errorf("%s: truncated flag not set", stream)
	}
	if len(text) > executor.DefaultOutputLimit+100 {
		t.Errorf("%s: %d bytes kept, want at most about %d", stream, len(text), executor.DefaultOutputLimit)
	}
	if !strings.HasPrefix(text, head) || !strings.HasSuffix(text, tail) {
		t.Errorf("%s: head or tail lost", stream)
	}
	loc := omitted.FindStringSubmatchIndex(text)
	if loc == nil {
		t.Fatalf("%s: no omission marker", stream)
	}
	n, err := strconv.Atoi(text[loc[2]:loc[3]])
	if err != nil {
		t.Fatal(err)
	}
	if kept := len(text) - (loc[1] - loc[0]); kept+n != total {
		t.Errorf("%s: %d kept + %d omitted != %d written", stream, kept, n, total)
	}
}

func testOutputCapped(t *testing.T, h Harness) {
	const outSize, errSize = 50 << 20, 3 << 20
	res := run(t, h, shJob(fmt.Sprintf(`printf 'HEAD-MARKER\n'
yes 0123456789abcdef | head -c %d
printf 'TAIL-MARKER\n'
printf 'ERR-HEAD\n' >&2
yes e | head -c %d >&2
printf 'ERR-TAIL\n' >&2
`, outSize, errSize)))
	if !res.Success() {
		t.Fatalf("exit %d, error %q", res.ExitCode, res.Error)
	}
	checkCapped(t, "stdout", res.Stdout, res.StdoutTruncated, outSize+24, "HEAD-MARKER\n0123456789abcdef\n", "TAIL-MARKER\n")
	checkCapped(t, "stderr", res.Stderr, res.StderrTruncated, errSize+18, "ERR-HEAD\ne\n", "ERR-TAIL\n")
}

// secretForms returns the forms of a secret a script may print.
func secretForms(secret string) map[string]string {
	jsonHTML, _ := json.Marshal(secret)
	return map[string]string{
		"raw":       secret,
		"base64":    base64.StdEncoding.EncodeToString([]byte(secret)),
		"url-query": url.QueryEscape(secret),
		"url-path":  url.PathEscape(secret),
		"json":      strings.Trim(string(jsonHTML), `"`),
	}
}

const maskedSecret = `N3w/P@ss+w0rd="<&>" é`

func testSecretsMasked(t *testing.T, h Harness) {
	oldSecret := "0ld-Secret-Value"
	line, _ := keeperLine(t, maskedSecret, oldSecret)
	var script strings.Builder
	forms := secretForms(maskedSecret)
	for name, form := range forms {
		fmt.Fprintf(&script, "printf '%%s\\n' %s\n", sq(name+":"+form))
		fmt.Fprintf(&script, "printf '%%s\\n' %s >&2\n", sq(name+":"+form))
	}
	fmt.Fprintf(&script, "printf '%%s\\n' %s\n", sq("old:"+oldSecret))
	script.WriteString(`IFS= read -r line
printf 'line:%s\n' "$line"
printf 'line:%s\n' "$line" >&2
printf '%s' "$line" | base64 -d
`)
	job := shJob(script.String())
	job.Stdin = []byte(line + "\n")
	job.Secrets = []string{maskedSecret, oldSecret}
	res := run(t, h, job)
	if !res.Success() {
		t.Fatalf("exit %d, error %q, stderr %q", res.ExitCode, res.Error, res.Stderr)
	}
	forms["old"] = oldSecret
	forms["line"] = line
	for name, form := range forms {
		for stream, text := range map[string]string{"stdout": res.Stdout, "stderr": res.Stderr} {
			if strings.Contains(text, form) {
				t.Errorf("%s holds the %s form of a secret", stream, name)
			}
			if name != "old" && !strings.Contains(text, name+":"+executor.Mask+"\n") {
				t.Errorf("%s: no masked %q line in %q", stream, name, text)
			}
		}
	}
	for _, want := range []string{"old:" + executor.Mask + "\n", `"newPassword":"` + executor.Mask + `"`, `"user":"svc@example.com"`} {
		if !strings.Contains(res.Stdout, want) {
			t.Errorf("stdout %q does not hold %q", res.Stdout, want)
		}
	}
}

func testCommandHasNoSecret(t *testing.T, h Harness) {
	line, _ := keeperLine(t, maskedSecret, "old-secret")
	job := shJob("cat >/dev/null\n")
	job.Stdin = []byte(line + "\n")
	job.Secrets = []string{maskedSecret, "old-secret"}
	res := run(t, h, job)
	if !res.Success() {
		t.Fatalf("exit %d, error %q", res.ExitCode, res.Error)
	}
	if !strings.Contains(res.Command, "script.sh") {
		t.Errorf("command %q does not name the script", res.Command)
	}
	forms := secretForms(maskedSecret)
	forms["line"] = line
	for name, form := range forms {
		if strings.Contains(res.Command, form) {
			t.Errorf("command holds the %s form of the secret", name)
		}
	}
}

func testEnvironment(t *testing.T, h Harness) {
	job := shJob(`printf '%s|%s|%s\n' "$POSTROTATE_ROTATION_ID" "$POSTROTATE_STEP" "$POSTROTATE_ATTEMPT"` + "\n")
	job.RotationID, job.Step, job.Attempt = "rot-env-42", 4, 2
	res := run(t, h, job)
	if want := "rot-env-42|4|2\n"; res.Stdout != want {
		t.Errorf("stdout %q, want %q", res.Stdout, want)
	}
}

func testStdinNotRead(t *testing.T, h Harness) {
	big := strings.Repeat("QUJD", 64<<10) + "\n" // 256 KiB, more than a pipe holds
	for _, tc := range []struct {
		name   string
		script string
		exit   int
	}{
		{"ExitZero", "echo ignored\n", 0},
		{"ExitFour", "echo ignored\nexit 4\n", 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			job := shJob(tc.script)
			job.Stdin = []byte(big)
			res := run(t, h, job)
			if res.ExitCode != tc.exit || res.Error != "" || res.Stdout != "ignored\n" {
				t.Errorf("exit %d, error %q, stdout %q; want exit %d", res.ExitCode, res.Error, res.Stdout, tc.exit)
			}
		})
	}
}
