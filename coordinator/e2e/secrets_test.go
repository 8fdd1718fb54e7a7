package e2e

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/postrotate/postrotate/coordinator/runs"
	"github.com/postrotate/postrotate/coordinator/server"
	"github.com/postrotate/postrotate/messages/envelope"
)

const markerOld = "Marker-E2E-0ld-9d1c" // alice's password in inventoryYAML

// secretForm is a secret as it may be written somewhere: as is, escaped,
// or inside a base64 stream.
type secretForm struct {
	name string // what it is, e.g. "new password (base64)": never the secret
	form string
}

// secretForms returns the forms of each named secret to look for: raw,
// JSON-escaped, URL-escaped, within base64 at every alignment, and within
// base64 inside base64 (the old password is in the payload's records, which
// are base64 inside the base64 stdin line).
func secretForms(secrets map[string]string) []secretForm {
	var forms []secretForm
	add := func(name, f string) {
		if len(f) >= 8 && !slices.ContainsFunc(forms, func(s secretForm) bool { return s.form == f }) {
			forms = append(forms, secretForm{name, f})
		}
	}
	// within returns what s looks like at every alignment in a base64
	// stream: the encoding of s[i:] without its last, partial group.
	within := func(s string) []string {
		var out []string
		for i := range min(3, len(s)) {
			for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding} {
				if b := enc.EncodeToString([]byte(s[i:])); len(b) > 4 {
					out = append(out, b[:len(b)-4])
				}
			}
		}
		return out
	}
	for name, s := range secrets {
		add(name, s)
		j, _ := json.Marshal(s)
		add(name+" (JSON)", string(j[1:len(j)-1]))
		add(name+" (URL)", url.QueryEscape(s))
		for _, b := range within(s) {
			add(name+" (base64)", b)
			for _, bb := range within(b) {
				add(name+" (base64 in base64)", bb)
			}
		}
	}
	return forms
}

// checkNoForm reports each secret form that text holds.
func checkNoForm(t *testing.T, where, text string, forms []secretForm) {
	t.Helper()
	for _, f := range forms {
		if strings.Contains(text, f.form) {
			t.Errorf("%s holds the %s", where, f.name)
		}
	}
}

// checkTreeNoSecret reports every file under dir that holds a form of a
// secret, and returns how many files it read.
func checkTreeNoSecret(t *testing.T, dir string, forms []secretForm) int {
	t.Helper()
	files := 0
	err := filepath.WalkDir(dir, func(p string, de fs.DirEntry, err error) error {
		if err != nil || de.IsDir() {
			return err
		}
		files++
		data, err := os.ReadFile(p)
		checkNoForm(t, p, string(data), forms)
		return err
	})
	if err != nil {
		t.Fatalf("walk %s: %v", dir, err)
	}
	return files
}

// procText is the command line or the environment of a process, read
// while a rotation ran.
type procText struct {
	where string // "pid 123 (bash) cmdline"
	text  string
}

// procTable is what /proc said of every process on the machine: its
// parent, its name and its command line.
type procTable struct {
	parent   map[int]int
	comm     map[int]string
	cmdlines map[int]string
}

// scanProcs reads the command line of every process on the machine, and
// the environment of the processes in roots and their descendants. It
// returns what it read and the command lines of the descendants.
func scanProcs(t *testing.T, roots ...int) (texts []procText, descendants []string) {
	t.Helper()
	procs, texts := readProcTable(t)
	for pid := range procs.tree(roots) {
		env, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "environ"))
		if err != nil {
			continue // ended
		}
		texts = append(texts, procText{"pid " + strconv.Itoa(pid) + " (" + procs.comm[pid] + ") environ", strings.ReplaceAll(string(env), "\x00", "\n")})
		if !slices.Contains(roots, pid) {
			descendants = append(descendants, procs.cmdlines[pid])
		}
	}
	return texts, descendants
}

// readProcTable reads the parent, name and command line of every process
// under /proc, and returns them with the command lines as texts. A
// process may end at any time: what cannot be read is skipped.
func readProcTable(t *testing.T) (procTable, []procText) {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatalf("read /proc: %v", err)
	}
	procs := procTable{parent: map[int]int{}, comm: map[int]string{}, cmdlines: map[int]string{}}
	var texts []procText
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		dir := filepath.Join("/proc", e.Name())
		if stat, err := os.ReadFile(filepath.Join(dir, "stat")); err == nil {
			procs.readStat(pid, string(stat))
		}
		if cmd, err := os.ReadFile(filepath.Join(dir, "cmdline")); err == nil {
			procs.cmdlines[pid] = strings.ReplaceAll(string(cmd), "\x00", " ")
			texts = append(texts, procText{"pid " + e.Name() + " (" + procs.comm[pid] + ") cmdline", procs.cmdlines[pid]})
		}
	}
	return procs, texts
}

// readStat records the name and parent of pid from its /proc/pid/stat:
// "pid (comm) state ppid ...", where comm may hold spaces and parens.
func (p procTable) readStat(pid int, stat string) {
	i := strings.LastIndexByte(stat, ')')
	if i <= 0 {
		return
	}
	p.comm[pid] = stat[strings.IndexByte(stat, '(')+1 : i]
	if f := strings.Fields(stat[i+1:]); len(f) > 1 {
		p.parent[pid], _ = strconv.Atoi(f[1])
	}
}

// tree returns roots and all their descendants.
func (p procTable) tree(roots []int) map[int]bool {
	tree := map[int]bool{}
	for _, r := range roots {
		tree[r] = true
	}
	for grown := true; grown; {
		grown = false
		for pid, ppid := range p.parent {
			if tree[ppid] && !tree[pid] {
				tree[pid], grown = true, true
			}
		}
	}
	return tree
}

// enrolledWorker enrolls host with `postrotate worker add` (once: enrolling
// again would replace its identity) and starts a worker with the
// credentials, which it also returns.
func (d *deployment) enrolledWorker(host, name string) (*proc, envelope.Credentials) {
	d.t.Helper()
	file := filepath.Join(d.dir, host+".creds")
	if _, err := os.Stat(file); err != nil {
		out, err := exec.Command(bins.postrotate, "worker", "add", host, "--out", file, "--server", d.api.base).CombinedOutput()
		if err != nil {
			d.t.Fatalf("worker add %s: %v\n%s", host, err, out)
		}
	}
	creds, err := envelope.ReadCredentials(file)
	if err != nil {
		d.t.Fatalf("read the credentials of %s: %v", host, err)
	}
	p := start(d.t, "worker "+name, bins.worker, "--creds", file, "--name", name, "--nats", d.natsURL, "--log-level", "debug")
	p.waitLog("worker started")
	return p, creds
}

// getRaw returns the body of GET path on the API.
func (a api) getRaw(path string) string {
	a.t.Helper()
	resp, err := http.Get(a.base + path)
	if err != nil {
		a.t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		a.t.Fatalf("GET %s: %d %v", path, resp.StatusCode, err)
	}
	return string(body)
}

// No secret anywhere during a run: with enrolled workers and debug logs on
// serve and the workers, neither alice's old password (the inventory's
// marker), nor the rotation's new password, nor the workers' seeds is on
// the command line of any process on the machine nor in the environment of
// serve, the workers and the scripts while a script runs; nor, afterwards,
// in the logs, the rotation's results or serve's data directory.
func TestNoSecretDuringRun(t *testing.T) {
	t.Parallel()
	if _, err := os.Stat("/proc/self/cmdline"); err != nil {
		t.Skipf("needs /proc (Linux) to read the processes' command lines: %v", err)
	}
	d := deployRecordingNewPassword(t)
	gw, gwCreds := d.enrolledWorker("gw", "gw-a")
	m1, m1Creds := d.enrolledWorker("m1", "m1-a")
	touch(t, filepath.Join(d.dir, "hold"))
	run := d.rotate("alice")
	waitFile(t, filepath.Join(d.dir, "m.started"))

	// The texts stay in memory until the new password is known.
	texts := scanWhileScriptRuns(t, d.serve, gw, m1)
	touch(t, filepath.Join(d.dir, "release"))
	v := d.wait(run.ID)
	if v.State != runs.StateCompleted || v.Effect != "committed" || len(v.Results) != 3 {
		t.Fatalf("rotation: %+v", v)
	}

	forms := secretForms(map[string]string{
		"old password": markerOld, "new password": d.scriptsNewPassword(),
		"gw's NATS seed": gwCreds.UserSeed, "gw's curve seed": gwCreds.CurveSeed,
		"m1's NATS seed": m1Creds.UserSeed, "m1's curve seed": m1Creds.CurveSeed,
	})
	procs := []*proc{gw, m1, d.serve}
	hideForms(forms, procs...)
	checkProcTextsNoForm(t, texts, forms)
	checkNoForm(t, "GET /v1/rotations/{id}", d.api.getRaw("/v1/rotations/"+run.ID), forms)
	checkNoForm(t, "GET /v1/rotations?user=alice", d.api.getRaw("/v1/rotations?user=alice"), forms)
	checkNoForm(t, "GET /v1/records/alice", d.api.getRaw("/v1/records/alice"), forms)

	// Stopped, the processes have logged all they will.
	stopWorkersThenServe(t, d.serve, gw, m1)
	for _, p := range procs {
		checkDebugLogsNoForm(t, p, forms)
	}
	if files := checkTreeNoSecret(t, filepath.Join(d.dir, "data"), forms); files < 5 {
		t.Fatalf("walk data: %d files", files)
	}
}

// deployRecordingNewPassword deploys with enrolled workers and a user
// script that records the sha256 of the new password it received (never
// the password itself) in the file "new.sha256", to tell that the password
// searched for is the one the scripts saw.
func deployRecordingNewPassword(t *testing.T) *deployment {
	t.Helper()
	return deployFiles(t, map[string]func(string) string{
		"u.sh": func(dir string) string {
			return "echo u >> " + filepath.Join(dir, "count") + "\n" +
				`python3 -c 'import base64, hashlib, json, sys; p = json.loads(base64.b64decode(sys.stdin.readline()))["newPassword"]; print(hashlib.sha256(p.encode()).hexdigest())' > ` +
				filepath.Join(dir, "new.sha256") + "\n"
		},
	}, true)
}

// scanWhileScriptRuns reads the processes five times while the machine
// script runs (it waits for "release"), with the environments of serve and
// the workers and of their descendants, and fails unless the machine script
// was among the descendants.
func scanWhileScriptRuns(t *testing.T, ps ...*proc) []procText {
	t.Helper()
	roots := make([]int, len(ps))
	for i, p := range ps {
		roots[i] = p.cmd.Process.Pid
	}
	var texts []procText
	scriptSeen := false
	for range 5 {
		got, descendants := scanProcs(t, roots...)
		texts = append(texts, got...)
		scriptSeen = scriptSeen || slices.ContainsFunc(descendants, func(c string) bool { return strings.Contains(c, "m.sh") })
	}
	if !scriptSeen {
		t.Fatal("the machine script was not among the worker's descendants while it ran")
	}
	return texts
}

// scriptsNewPassword returns alice's password as `records get --reveal`
// shows it, having checked that it is the one the scripts received (its
// sha256 in "new.sha256").
func (d *deployment) scriptsNewPassword() string {
	d.t.Helper()
	var rec server.RecordView
	out, err := exec.Command(bins.postrotate, "records", "get", "alice", "--server", d.api.base, "--reveal", "--json").Output()
	if err != nil || json.Unmarshal(out, &rec) != nil || len(rec.Password) < 16 {
		d.t.Fatalf("records get --reveal: %v (%d bytes of output)", err, len(out))
	}
	sum, err := os.ReadFile(filepath.Join(d.dir, "new.sha256"))
	if want := sha256.Sum256([]byte(rec.Password)); err != nil || strings.TrimSpace(string(sum)) != hex.EncodeToString(want[:]) {
		d.t.Fatalf("the scripts' new password is not the record's: %v", err)
	}
	return rec.Password
}

// hideForms makes the logs of ps, printed when the test fails, show where
// a secret was, not what.
func hideForms(forms []secretForm, ps ...*proc) {
	for _, p := range ps {
		p.hide = func(s string) string {
			for _, f := range forms {
				s = strings.ReplaceAll(s, f.form, "<"+f.name+">")
			}
			return s
		}
	}
}

// checkProcTextsNoForm reports each form of a secret in texts, once per
// distinct text (the same process is read several times).
func checkProcTextsNoForm(t *testing.T, texts []procText, forms []secretForm) {
	t.Helper()
	seen := map[procText]bool{}
	for _, p := range texts {
		if !seen[p] {
			seen[p] = true
			checkNoForm(t, p.where, p.text, forms)
		}
	}
}

// stopWorkersThenServe stops the workers together (each may wait for its
// idle pull to end), then serve, and waits for each to exit.
func stopWorkersThenServe(t *testing.T, serve *proc, workers ...*proc) {
	t.Helper()
	for _, w := range workers {
		w.signal(syscall.SIGTERM)
	}
	for _, p := range append(workers, serve) {
		if p == serve {
			p.signal(syscall.SIGTERM)
		}
		if err := p.waitExit(30 * time.Second); err != nil {
			t.Errorf("%s exit: %v", p.name, err)
		}
	}
}

// checkDebugLogsNoForm checks that p logged at debug level and that its
// logs hold no form of a secret.
func checkDebugLogsNoForm(t *testing.T, p *proc, forms []secretForm) {
	t.Helper()
	if logs := p.logs.String(); !strings.Contains(logs, `"level":"debug"`) && !strings.Contains(logs, " DBG ") {
		t.Errorf("%s logged nothing at debug level", p.name)
	}
	checkNoForm(t, "the logs of "+p.name, p.logs.String(), forms)
}
