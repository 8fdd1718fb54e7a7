package e2e

// The fault-injection suite: each test breaks something a real deployment
// loses (the disk, a worker, the broker under a published result, a
// server's payload limit, an enrolment, the data directory, a script's
// process tree) with real serve and worker processes, and checks that the
// new password is never lost — after each, the record holds every password
// a target may hold, current or in the history marked uncommitted — and
// that the run's effect says the truth. README "Failure semantics" lists
// them.

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/postrotate/postrotate/coordinator/rotation"
	"github.com/postrotate/postrotate/coordinator/runs"
	"github.com/postrotate/postrotate/coordinator/server"
	"github.com/postrotate/postrotate/worker/workertest"
)

// faultInventory: bob's one script runs on the gateway gw. It writes the
// payload's newPassword to the file "target" (standing for the system the
// script changes), its pid to "script.pid", starts a setsid child when the
// file "spawn" exists, then waits for "release" when "hold" exists, and
// prints what flood says to print.
const faultInventory = `version: 1
records:
  - {uid: cfg, type: pamConfiguration, gateway: gw}
  - {uid: m1, type: pamMachine, worker: m1, scripts: [{file: m.sh}]}
  - uid: bob
    type: pamUser
    fields: [{type: login, value: bob}, {type: password, value: Bob-0ld-Passw0rd-71e3}]
    rotation:
      type: scripts_only
      configuration: cfg
      complexity: {length: 24, upper: 2, lower: 2, digits: 2, special: 2, special_chars: "!@#%^*-_=+"}
    scripts: [{file: set.sh, timeout: 2m}]
  - uid: carol
    type: pamUser
    fields: [{type: login, value: carol}, {type: password, value: Carol-0ld-Passw0rd}]
    rotation: {type: scripts_only, resource: m1, configuration: cfg}
    scripts: [{file: set.sh, timeout: 2m}]
`

const setScript = `read -r line
pw=$(printf %%s "$line" | base64 -d | sed -n 's/.*"newPassword":"\([^"]*\)".*/\1/p')
printf %%s "$pw" > %[1]s/target.tmp && mv %[1]s/target.tmp %[1]s/target
echo $$ > %[1]s/script.pid
if [ -e %[1]s/spawn ]; then setsid sh -c 'echo $$ > %[1]s/child.pid; exec sleep 300' & fi
if [ -e %[1]s/hold ]; then while [ ! -e %[1]s/release ]; do sleep 0.05; done; fi
if [ -e %[1]s/flood ]; then head -c 50000000 /dev/zero | tr '\0' o; head -c 50000000 /dev/zero | tr '\0' e >&2; fi
echo set
`

// faultDeploy starts serve with faultInventory.
func faultDeploy(t *testing.T, enrolled bool, serveArgs ...string) *deployment {
	t.Helper()
	return deployFiles(t, map[string]func(string) string{
		"inventory.yaml": func(string) string { return faultInventory },
		"set.sh":         func(dir string) string { return fmt.Sprintf(setScript, dir) },
		"m.sh":           func(string) string { return "exit 0\n" },
	}, enrolled, serveArgs...)
}

// target is the password the script set on its "target".
func (d *deployment) target() string {
	d.t.Helper()
	data, err := os.ReadFile(filepath.Join(d.dir, "target"))
	if err != nil {
		d.t.Fatalf("the script set no target: %v", err)
	}
	if len(data) < 16 {
		d.t.Fatalf("target %q: not a generated password", data)
	}
	return string(data)
}

// record is GET /v1/records/{uid}?reveal=true.
func (d *deployment) record(uid string) server.RecordView {
	d.t.Helper()
	var v server.RecordView
	if code := d.api.do("GET", "/v1/records/"+uid+"?reveal=true", nil, &v); code != http.StatusOK {
		d.t.Fatalf("GET /v1/records/%s: %d", uid, code)
	}
	return v
}

// holds reports whether the record keeps pw: current, or in the history
// with source (any source when source is "").
func holds(v server.RecordView, pw, source string) bool {
	if source == "" && v.Password == pw {
		return true
	}
	return slices.ContainsFunc(v.History, func(h server.HistoryView) bool {
		return h.Password == pw && (source == "" || h.Source == source)
	})
}

// pidOf reads a pid file.
func pidOf(t *testing.T, path string) int {
	t.Helper()
	var pid int
	workertest.Eventually(t, 30*time.Second, path+" holds a pid", func() bool {
		data, err := os.ReadFile(path)
		if err != nil {
			return false
		}
		pid, err = strconv.Atoi(strings.TrimSpace(string(data)))
		return err == nil
	})
	return pid
}

// alive reports whether pid is a live process (a zombie counts as dead).
func alive(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the command's closing parenthesis.
	s := string(stat)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

// waitDead waits until pid has ended.
func waitDead(t *testing.T, pid int, what string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for alive(pid) {
		if time.Now().After(deadline) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("%s (pid %d) still runs 15s after its worker died", what, pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// health is GET /healthz: its status and body.
func (a api) health() (int, string) {
	resp, err := http.Get(a.base + "/healthz")
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// 1. The disk under serve's --data fills while a rotation runs: the run is
// not reported finished while its outcome cannot be stored, /healthz says
// why, and once space returns (no restart) it completes committed with the
// password the target holds; the next rotation works; a restart keeps it.
func TestFaultDiskFull(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a 20 MiB tmpfs under --data (mount -t tmpfs): run as root, as CI does")
	}
	mnt := mountTmpfs(t, "20m")
	d := faultDeploy(t, false, "--data", filepath.Join(mnt, "data"))
	d.worker("gw", "gw-a")
	if v := d.wait(d.rotate("bob").ID); v.Effect != "committed" {
		t.Fatalf("first rotation: %+v", v)
	}

	if err := os.Remove(filepath.Join(d.dir, "script.pid")); err != nil {
		t.Fatal(err)
	}
	touch(t, filepath.Join(d.dir, "hold"))
	run := d.rotate("bob")
	waitFile(t, filepath.Join(d.dir, "script.pid"))
	fill := filepath.Join(mnt, "fill")
	fillUp(t, fill)
	touch(t, filepath.Join(d.dir, "release"))
	pw := d.target()
	checkRunHeldUnstored(t, d, run.ID)

	if err := os.Remove(fill); err != nil {
		t.Fatal(err)
	}
	checkRunStoredOnceSpaceReturns(t, d, run.ID, pw)

	// Writes work again without a restart: the next rotation too.
	_ = os.Remove(filepath.Join(d.dir, "hold"))
	if v := d.wait(d.rotate("bob").ID); v.Effect != "committed" {
		t.Fatalf("rotation after recovery: %+v", v)
	}
	pw = d.target()
	d.serve.kill()
	d.startServe()
	if rec := d.record("bob"); rec.Password != pw {
		t.Fatalf("after a restart, the record's password is not the one the target holds (source %s)", rec.Source)
	}
}

// mountTmpfs mounts a tmpfs of size under the test's directory and
// returns where; it is unmounted (lazily) when the test ends, after the
// processes the test started are killed.
func mountTmpfs(t *testing.T, size string) string {
	t.Helper()
	mnt := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(mnt, 0o700); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", mnt).CombinedOutput(); err != nil {
		t.Fatalf("mount a tmpfs: %v\n%s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("umount", "-l", mnt).Run() })
	return mnt
}

// checkRunHeldUnstored checks that, while the outcome of run id cannot be
// stored, serve says so on /healthz and the run stays running.
func checkRunHeldUnstored(t *testing.T, d *deployment, id string) {
	t.Helper()
	workertest.Eventually(t, 60*time.Second, "/healthz says the disk is full", func() bool {
		code, body := d.api.health()
		return code == http.StatusServiceUnavailable && strings.Contains(body, "write")
	})
	var v rotation.View
	if d.api.do("GET", "/v1/rotations/"+id, nil, &v) == http.StatusOK && v.Finished() {
		t.Fatalf("reported finished while its outcome cannot be stored: %+v", v)
	}
}

// checkRunStoredOnceSpaceReturns checks that run id, once space returns,
// completes committed with pw, the password the target holds, in the
// record, and that /healthz is well again.
func checkRunStoredOnceSpaceReturns(t *testing.T, d *deployment, id, pw string) {
	t.Helper()
	v := d.wait(id)
	if v.State != runs.StateCompleted || v.Effect != "committed" || strings.Contains(v.Note, "fail") {
		t.Fatalf("rotation after space returned: %+v", v)
	}
	if rec := d.record("bob"); rec.Password != pw {
		t.Fatalf("the record's password is not the one the target holds (source %s, %d history entries)", rec.Source, len(rec.History))
	}
	if code, body := d.api.health(); code != http.StatusOK {
		t.Fatalf("/healthz after space returned: %d %s", code, body)
	}
}

// fillUp writes zeros to path until the file system is full.
func fillUp(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	for {
		if _, err := f.Write(buf); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("fill: %v", err)
			}
			return
		}
	}
}

// 2. scripts_only, the worker killed (SIGKILL) while its script runs: the
// step is in doubt and the rotation not committed, and the password the
// script had already set on the target is in the record's history, marked
// uncommitted.
func TestFaultScriptsOnlyInDoubt(t *testing.T) {
	t.Parallel()
	d := faultDeploy(t, false, "--ack-wait", "2s", "--pinned-ttl", "2s")
	gw := d.worker("gw", "gw-a")
	touch(t, filepath.Join(d.dir, "hold"))
	run := d.rotate("bob")
	waitFile(t, filepath.Join(d.dir, "script.pid"))
	pw := d.target()
	gw.killProcess()
	d.worker("gw", "gw-b")
	v := d.wait(run.ID)
	touch(t, filepath.Join(d.dir, "release"))
	if v.State != runs.StateFailed || v.Effect != "not_committed" || len(v.Results) != 1 || !strings.Contains(v.Results[0].Error, "in doubt") {
		t.Fatalf("rotation: %+v", v)
	}
	rec := d.record("bob")
	if rec.Password != "Bob-0ld-Passw0rd-71e3" || !holds(rec, pw, "uncommitted") || rec.Pending != nil {
		t.Fatalf("record: old password current %v, the target's kept as uncommitted %v, pending %v; want true, true, false",
			rec.Password == "Bob-0ld-Passw0rd-71e3", holds(rec, pw, "uncommitted"), rec.Pending != nil)
	}
	if !strings.Contains(v.Note, "uncommitted") {
		t.Fatalf("note %q does not say where the password is", v.Note)
	}
}

// 3. The result of a finished script lost on its way (serve killed right
// after the script finished, the publish in flight gone with it): the
// worker publishes it again, with short attempts, once serve is back; the
// step is not "in doubt" and the rotation commits.
func TestFaultLostResultPublish(t *testing.T) {
	t.Parallel()
	d := faultDeploy(t, false)
	proxy := startProxy(t, strings.TrimPrefix(d.natsURL, "nats://"))
	w := start(t, "worker gw-a", bins.worker, "--host", "gw", "--name", "gw-a", "--nats", "nats://"+proxy.addr, "--log-level", "debug")
	w.waitLog("worker started")
	touch(t, filepath.Join(d.dir, "hold"))
	run := d.rotate("bob")
	waitFile(t, filepath.Join(d.dir, "script.pid"))
	proxy.dropNext("postrotate.results.")
	touch(t, filepath.Join(d.dir, "release"))
	proxy.waitDropped()
	// serve dies with the result it never got; it comes back at once.
	d.serve.kill()
	d.startServe()
	start := time.Now()
	v := d.wait(run.ID)
	if v.State != runs.StateCompleted || v.Effect != "committed" || !v.Results[0].Success || v.Results[0].Worker != "gw-a" {
		t.Fatalf("rotation: %+v", v)
	}
	if took := time.Since(start); took > 40*time.Second {
		t.Fatalf("the result arrived %s after serve returned: one publish attempt held the whole budget", took)
	}
	if rec := d.record("bob"); rec.Password != d.target() {
		t.Fatalf("the record's password is not the one the target holds (source %s)", rec.Source)
	}
}

// 4. An external nats-server with the default max_payload (1 MB) and a
// script printing 50 MB on stdout and on stderr: the result, shortened to
// fit, arrives at once and the rotation commits.
func TestFaultResultOverMaxPayload(t *testing.T) {
	t.Parallel()
	addr := freeAddr(t)
	host, port, _ := strings.Cut(addr, ":")
	ns := start(t, "nats-server", bins.natsServer, "-js", "-sd", t.TempDir(), "-a", host, "-p", port)
	ns.waitLog("Server is ready")
	d := faultDeploy(t, false, "--nats", "nats://"+addr)
	d.natsURL = "nats://" + addr
	touch(t, filepath.Join(d.dir, "flood"))
	w := d.worker("gw", "gw-a")
	// Both say at start that results may be shortened.
	d.serve.waitLog("max_payload is below two capped outputs")
	w.waitLog("max_payload is below two capped outputs")
	start := time.Now()
	v := d.wait(d.rotate("bob").ID)
	if v.State != runs.StateCompleted || v.Effect != "committed" {
		t.Fatalf("rotation: %+v", v)
	}
	r := v.Results[0]
	if !r.Success || !r.StdoutTruncated || !r.StderrTruncated || len(r.Stdout)+len(r.Stderr) > 1<<20 {
		t.Fatalf("result: success %v, truncated %v/%v, %d+%d bytes", r.Success, r.StdoutTruncated, r.StderrTruncated, len(r.Stdout), len(r.Stderr))
	}
	if took := time.Since(start); took > 40*time.Second {
		t.Fatalf("the result took %s", took)
	}
	if rec := d.record("bob"); rec.Password != d.target() {
		t.Fatalf("the record's password is not the one the target holds (source %s)", rec.Source)
	}
}

// 5. A step whose host has no enrolled worker: it has a result naming the
// host and the fix, in the API and in the CLI's count, and the step after
// it runs.
func TestFaultUnenrolledHost(t *testing.T) {
	t.Parallel()
	d := deployFiles(t, nil, true)
	d.enrolledWorker("gw", "gw-a") // m1 is never enrolled
	out, _ := exec.Command(bins.postrotate, "rotate", "--server", d.api.base, "--user", "alice", "--wait").CombinedOutput()
	if !strings.Contains(string(out), "2 of 3 steps succeeded") || !strings.Contains(string(out), `host "m1" has no enrolled worker: run postrotate worker add m1`) {
		t.Fatalf("rotate --wait:\n%s", out)
	}
	var list []runs.Run
	d.api.do("GET", "/v1/rotations?user=alice", nil, &list)
	if len(list) != 1 {
		t.Fatalf("runs: %+v", list)
	}
	v := d.wait(list[0].ID)
	if len(v.Results) != 3 || v.Results[1].Host != "m1" || v.Results[1].Success || !v.Results[2].Success || v.Effect != "not_committed" {
		t.Fatalf("rotation: %+v", v)
	}
	// Nothing carried the new password anywhere but to gw, whose script
	// succeeded: it is kept, since a target may hold it.
	if rec := d.record("alice"); rec.Pending != nil || len(rec.History) != 1 || rec.History[0].Source != "uncommitted" {
		t.Fatalf("record: pending %v, %d history entries, want none pending and one uncommitted", rec.Pending != nil, len(rec.History))
	}
}

// 6. A second serve on the same --data: it exits 2 naming the first one's
// pid, and the first one goes on.
func TestFaultSecondServeSameData(t *testing.T) {
	t.Parallel()
	d := deploy(t)
	args := slices.Clone(d.serveArgs)
	for i, a := range args {
		if a == "--http" || a == "--nats-listen" {
			args[i+1] = freeAddr(t)
		}
	}
	p := start(t, "second serve", bins.postrotate, args...)
	err := p.waitExit(30 * time.Second)
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 2 || !strings.Contains(p.logs.String(), fmt.Sprintf("pid %d", d.serve.cmd.Process.Pid)) {
		t.Fatalf("second serve: %v\n%s", err, p.logs.String())
	}
	d.worker("gw", "gw-a")
	d.worker("m1", "m1-a")
	if v := d.wait(d.rotate("alice").ID); v.State != runs.StateCompleted {
		t.Fatalf("the first serve after the second was refused: %+v", v)
	}
}

// 7. A worker killed (SIGKILL) while its script runs, the script having
// started a child that called setsid: the script dies with its worker, and
// the child is gone before the host's next step runs on the worker started
// in its place.
func TestFaultWorkerKilledScriptDies(t *testing.T) {
	t.Parallel()
	d := faultDeploy(t, false, "--ack-wait", "2s", "--pinned-ttl", "2s")
	gw := d.worker("gw", "gw-a")
	touch(t, filepath.Join(d.dir, "hold"))
	touch(t, filepath.Join(d.dir, "spawn"))
	run := d.rotate("bob")
	script := pidOf(t, filepath.Join(d.dir, "script.pid"))
	child := pidOf(t, filepath.Join(d.dir, "child.pid"))
	t.Cleanup(func() { _ = syscall.Kill(child, syscall.SIGKILL); _ = syscall.Kill(script, syscall.SIGKILL) })
	gw.killProcess()
	waitDead(t, script, "the script")
	d.worker("gw", "gw-b")
	waitDead(t, child, "the script's setsid child")
	v := d.wait(run.ID)
	if len(v.Results) != 1 || !strings.Contains(v.Results[0].Error, "in doubt") {
		t.Fatalf("rotation: %+v", v)
	}
	if rec := d.record("bob"); !holds(rec, d.target(), "uncommitted") {
		t.Fatal("the record lost the target's password")
	}
}

// proxy forwards TCP connections to a NATS server and can drop one
// message a client publishes, then cut the connection: the publish is
// lost in flight, as when the server dies right after the client sent it.
type proxy struct {
	t      *testing.T
	addr   string
	mu     sync.Mutex
	drop   string // subject prefix of the next client PUB/HPUB to drop
	conns  []net.Conn
	robbed chan struct{}
}

func startProxy(t *testing.T, upstream string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{t: t, addr: ln.Addr().String(), robbed: make(chan struct{})}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		p.mu.Lock()
		for _, c := range p.conns {
			c.Close()
		}
		p.mu.Unlock()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", upstream)
			if err != nil {
				c.Close()
				continue // serve is restarting: the client dials again
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, u)
			p.mu.Unlock()
			wg.Go(func() { _, _ = io.Copy(c, u); c.Close() })
			wg.Go(func() { p.clientToServer(c, u); u.Close() })
		}
	})
	return p
}

func (p *proxy) dropNext(subjectPrefix string) {
	p.mu.Lock()
	p.drop = subjectPrefix
	p.mu.Unlock()
}

func (p *proxy) waitDropped() {
	p.t.Helper()
	select {
	case <-p.robbed:
	case <-time.After(30 * time.Second):
		p.t.Fatal("the proxy saw no publish to drop")
	}
}

// clientToServer copies the client's protocol lines to the server, message
// by message, until it drops the one asked for: then it closes both ends.
func (p *proxy) clientToServer(c, u net.Conn) {
	r := newLineReader(c)
	for {
		line, err := r.line()
		if err != nil {
			return
		}
		var body []byte
		fields := strings.Fields(string(line))
		if len(fields) >= 3 && (fields[0] == "PUB" || fields[0] == "HPUB") {
			n, err := strconv.Atoi(fields[len(fields)-1])
			if err != nil {
				return
			}
			if body, err = r.bytes(n + 2); err != nil {
				return
			}
			p.mu.Lock()
			drop := p.drop != "" && strings.HasPrefix(fields[1], p.drop)
			if drop {
				p.drop = ""
			}
			p.mu.Unlock()
			if drop {
				c.Close()
				u.Close()
				close(p.robbed)
				return
			}
		}
		if _, err := u.Write(append(line, body...)); err != nil {
			return
		}
	}
}

// lineReader reads protocol lines (with their CRLF) and payloads.
type lineReader struct {
	r   io.Reader
	buf []byte
}

func newLineReader(r io.Reader) *lineReader { return &lineReader{r: r} }

func (l *lineReader) fill() error {
	tmp := make([]byte, 64<<10)
	n, err := l.r.Read(tmp)
	l.buf = append(l.buf, tmp[:n]...)
	if n > 0 {
		return nil
	}
	return err
}

func (l *lineReader) line() ([]byte, error) {
	for {
		if i := strings.Index(string(l.buf), "\r\n"); i >= 0 {
			out := slices.Clone(l.buf[:i+2])
			l.buf = l.buf[i+2:]
			return out, nil
		}
		if err := l.fill(); err != nil {
			return nil, err
		}
	}
}

func (l *lineReader) bytes(n int) ([]byte, error) {
	for len(l.buf) < n {
		if err := l.fill(); err != nil {
			return nil, err
		}
	}
	out := slices.Clone(l.buf[:n])
	l.buf = l.buf[n:]
	return out, nil
}
