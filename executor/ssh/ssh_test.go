//go:build unix

package ssh_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
	gossh "golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/postrotate/postrotate/executor"
	"github.com/postrotate/postrotate/executor/executortest"
	"github.com/postrotate/postrotate/executor/proctest"
	"github.com/postrotate/postrotate/executor/ssh"
	"github.com/postrotate/postrotate/executor/ssh/sshdtest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const testKillGrace = time.Second

// fixture is an SSH executor and the sshd it runs scripts on.
type fixture struct {
	sshd  *sshdtest.Server
	ssh   *ssh.SSH
	runs  string       // the parent of the run directories on the target
	dials atomic.Int32 // TCP connections the executor opened
	hook  func(net.Conn) net.Conn
}

// setup starts sshd (with the config lines given) and an SSH executor
// counting its dials, with its run directories under a test directory.
func setup(t testing.TB, opts ssh.Options, config ...string) *fixture {
	t.Helper()
	f := &fixture{sshd: sshdtest.Start(t, config...), runs: sshdtest.UserDir(t)}
	if opts.KillGrace == 0 {
		opts.KillGrace = testKillGrace
	}
	opts.TempDir = f.runs
	dial := opts.Dial
	if dial == nil {
		var d net.Dialer
		dial = d.DialContext
	}
	opts.Dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
		f.dials.Add(1)
		c, err := dial(ctx, network, addr)
		if err == nil && f.hook != nil {
			c = f.hook(c)
		}
		return c, err
	}
	f.ssh = ssh.New(opts)
	t.Cleanup(func() { _ = f.ssh.Close() })
	return f
}

// job returns a job running a sh script on the fixture's sshd.
func (f *fixture) job(script string) executor.Job {
	return executor.Job{
		RotationID: "rot-ssh", Step: 1, Attempt: 1,
		Script: executor.Script{Name: "script.sh", Content: []byte(script)},
		Target: f.sshd.Target(),
	}
}

func (f *fixture) run(t testing.TB, job executor.Job) executor.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res, err := f.ssh.Run(ctx, job)
	if err != nil {
		t.Fatalf("Run: %v (result %+v)", err, res)
	}
	return res
}

// assertNoRunDir checks that no run directory is left on the target.
func (f *fixture) assertNoRunDir(t *testing.T) {
	t.Helper()
	entries, err := os.ReadDir(f.runs)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		t.Errorf("left behind on the target: %s", e.Name())
	}
}

func TestConformance(t *testing.T) {
	f := setup(t, ssh.Options{})
	// The target's secrets are masked too, and a secret variant matching
	// the few bytes at the cut of a capped stream gets them masked, which
	// the suite's byte count does not expect: the variants of a random
	// password do about one time in eight, those of a key ending with "\n"
	// always (stderr is "e\n" lines). An OpenSSH key without its final
	// newline begins and ends with "-----" and never does.
	target := f.sshd.Target()
	target.Password, target.PrivateKey = "", strings.TrimSuffix(f.sshd.UserKeyPEM, "\n")
	executortest.Run(t, executortest.Harness{
		// One executor, as a worker has: the subtests share its connection.
		New:            func(*testing.T) executor.Executor { return f.ssh },
		Target:         target,
		KillGrace:      testKillGrace,
		StartWithin:    2 * time.Second,
		TermBeforeKill: true,
		// The target is this machine: the suite's local process checks see
		// the remote processes.
	})
}

func TestPasswordAuth(t *testing.T) {
	t.Parallel()
	f := setup(t, ssh.Options{})
	// The script prints the admin password: the target's secrets are masked.
	job := f.job("id -un\necho " + sshdtest.Password() + "\n")
	res := f.run(t, job)
	if !res.Success() || res.Stdout != sshdtest.User+"\n"+executor.Mask+"\n" {
		t.Fatalf("exit %d, error %q, stdout %q, stderr %q", res.ExitCode, res.Error, res.Stdout, res.Stderr)
	}
	if res.System != "Linux" {
		t.Errorf("system %q, want Linux", res.System)
	}
	if dir, ok := strings.CutPrefix(res.Command, "/bin/sh "+f.runs+"/postrotate-"); !ok || !strings.HasSuffix(dir, "/script.sh") {
		t.Errorf("command %q, want /bin/sh and the script's path under %s", res.Command, f.runs)
	}
	f.assertNoRunDir(t)

	t.Run("WrongPassword", func(t *testing.T) {
		job := f.job("echo never\n")
		job.Target.Password = "not-the-password"
		res, err := f.ssh.Run(context.Background(), job)
		if err == nil || !strings.Contains(err.Error(), f.sshd.Addr) || errors.Is(err, ssh.ErrHostKey) {
			t.Fatalf("err %v, want a login failure naming %s", err, f.sshd.Addr)
		}
		if strings.Contains(err.Error(), "not-the-password") || strings.Contains(res.Error, "not-the-password") {
			t.Error("the password is in the error")
		}
		if res.ExitCode != -1 || res.Success() || res.Error == "" {
			t.Errorf("result %+v", res)
		}
	})
}

func TestKeyAuth(t *testing.T) {
	t.Parallel()
	f := setup(t, ssh.Options{})
	const passphrase = "key-Passphrase-1"
	encrypted := sshdtest.MarshalKey(t, f.sshd.UserKey, passphrase)
	for _, tc := range []struct {
		name                  string
		key, passphrase       string
		wantErr               bool
		wantPassphraseMissing bool
	}{
		{name: "Plain", key: f.sshd.UserKeyPEM},
		{name: "Encrypted", key: encrypted, passphrase: passphrase},
		{name: "EncryptedWithoutPassphrase", key: encrypted, wantErr: true, wantPassphraseMissing: true},
		{name: "EncryptedWrongPassphrase", key: encrypted, passphrase: "wrong", wantErr: true},
		{name: "NotAuthorized", key: sshdtest.MarshalKey(t, newKey(t), ""), wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			job := f.job("id -un\n")
			job.Target.Password = ""
			job.Target.PrivateKey, job.Target.Passphrase = tc.key, tc.passphrase
			res, err := f.ssh.Run(context.Background(), job)
			if tc.wantErr {
				var missing *gossh.PassphraseMissingError
				if err == nil || errors.As(err, &missing) != tc.wantPassphraseMissing {
					t.Fatalf("err %v, want an error (passphrase missing: %v)", err, tc.wantPassphraseMissing)
				}
				if strings.Contains(err.Error(), "PRIVATE KEY") || (tc.passphrase != "" && strings.Contains(err.Error(), tc.passphrase)) {
					t.Errorf("error %q shows the key or passphrase", err)
				}
				return
			}
			if err != nil || !res.Success() || res.Stdout != sshdtest.User+"\n" {
				t.Fatalf("err %v, result %+v", err, res)
			}
		})
	}
}

func newKey(t *testing.T) ed25519.PrivateKey {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return priv
}

func TestHostKey(t *testing.T) {
	t.Parallel()
	f := setup(t, ssh.Options{})
	other, err := gossh.NewPublicKey(newKey(t).Public())
	if err != nil {
		t.Fatal(err)
	}
	otherLine := func(host string) string {
		return knownhosts.Line([]string{host}, other)
	}
	offered := gossh.FingerprintSHA256(f.sshd.HostKey)
	for _, tc := range []struct {
		name        string
		set         func(*executor.Target)
		wantErr     error
		wantChanged bool
		noDial      bool
	}{
		{name: "KnownHosts", set: func(*executor.Target) {}},
		{name: "KnownHostsAmongOthers", set: func(tg *executor.Target) {
			tg.KnownHosts = otherLine("example.org") + "\n" + f.sshd.KnownHosts()
		}},
		{name: "Pinned", set: func(tg *executor.Target) { tg.KnownHosts, tg.HostKey = "", f.sshd.Pinned() }},
		{name: "Insecure", set: func(tg *executor.Target) { tg.KnownHosts, tg.InsecureIgnoreHostKey = "", true }},
		{name: "KnownHostsChanged", set: func(tg *executor.Target) { tg.KnownHosts = otherLine(f.sshd.Addr) },
			wantErr: ssh.ErrHostKey, wantChanged: true},
		{name: "KnownHostsUnknownHost", set: func(tg *executor.Target) { tg.KnownHosts = otherLine("example.org") },
			wantErr: ssh.ErrHostKey},
		{name: "PinnedChanged", set: func(tg *executor.Target) {
			tg.KnownHosts, tg.HostKey = "", string(gossh.MarshalAuthorizedKey(other))
		}, wantErr: ssh.ErrHostKey, wantChanged: true},
		{name: "NoneConfigured", set: func(tg *executor.Target) { tg.KnownHosts = "" },
			wantErr: ssh.ErrNoHostKey, noDial: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			job := f.job("echo ok\n")
			tc.set(job.Target)
			before := f.dials.Load()
			res, err := f.ssh.Run(context.Background(), job)
			if tc.wantErr == nil {
				if err != nil || res.Stdout != "ok\n" {
					t.Fatalf("err %v, result %+v", err, res)
				}
				return
			}
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("err %v, want %v", err, tc.wantErr)
			}
			if tc.noDial {
				if n := f.dials.Load() - before; n != 0 {
					t.Errorf("%d connections opened without a host key to check", n)
				}
				return
			}
			checkHostKeyError(t, err, res, f.sshd.Addr, offered, tc.wantChanged)
		})
	}
}

// checkHostKeyError checks that err, and the result, tell that the ed25519
// key offered by addr, with fingerprint offered, was refused, and whether
// it changed.
func checkHostKeyError(t *testing.T, err error, res executor.Result, addr, offered string, wantChanged bool) {
	t.Helper()
	var hkErr *ssh.HostKeyError
	if !errors.As(err, &hkErr) {
		t.Fatalf("err %v is no *HostKeyError", err)
	}
	if hkErr.Host != addr || hkErr.Fingerprint != offered || hkErr.KeyType != gossh.KeyAlgoED25519 || hkErr.Changed != wantChanged {
		t.Errorf("host key error %+v, want host %s, key %s, changed %v", hkErr, addr, offered, wantChanged)
	}
	if !strings.Contains(err.Error(), offered) || !strings.Contains(res.Error, offered) {
		t.Errorf("error %q / result error %q do not show the offered key", err, res.Error)
	}
}

func TestStdinFraming(t *testing.T) {
	t.Parallel()
	f := setup(t, ssh.Options{})
	big := make([]byte, 3<<20) // more than a channel window
	if _, err := rand.Read(big); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		stdin []byte
	}{
		{"KeeperLine", []byte("eyJuZXdQYXNzd29yZCI6ICJzM2NyZXQifQ==\n")},
		{"NoNewline", []byte("no newline")},
		{"CRLFAndNUL", []byte("a\r\n\x00b\n\n")},
		{"Empty", nil},
		{"ThreeMiBBinary", big},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			job := f.job("sha256sum | cut -d' ' -f1\n")
			job.Stdin = tc.stdin
			res := f.run(t, job)
			sum := sha256.Sum256(tc.stdin)
			if want := hex.EncodeToString(sum[:]) + "\n"; !res.Success() || res.Stdout != want {
				t.Errorf("exit %d, error %q, stdout %q, stderr %q; want the sha256 of exactly the stdin, %q", res.ExitCode, res.Error, res.Stdout, res.Stderr, want)
			}
		})
	}
}

var pidLine = regexp.MustCompile(`(?m)^pid (\d+)$`)

// pids returns the pids a script printed, killed at cleanup whatever the
// test finds.
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

func TestTimeoutKillsHungScript(t *testing.T) {
	t.Parallel()
	f := setup(t, ssh.Options{KillGrace: 300 * time.Millisecond})
	// The script and its children ignore SIGTERM: SIGKILL must follow.
	job := f.job(`trap '' TERM
echo "pid $$"
sleep 300 &
echo "pid $!"
( sleep 300 & echo "pid $!"; wait ) &
echo before
wait
echo after
`)
	job.Script.Timeout = time.Second
	res := f.run(t, job)
	if !res.TimedOut || res.ExitCode != -1 || res.Success() || !strings.Contains(res.Error, "timed out after 1s: process tree killed") {
		t.Errorf("timed out %v, exit %d, error %q", res.TimedOut, res.ExitCode, res.Error)
	}
	if !strings.Contains(res.Stdout, "before\n") || strings.Contains(res.Stdout, "after") {
		t.Errorf("stdout %q", res.Stdout)
	}
	if strings.Contains(res.Stderr, "postrotate-pgid") {
		t.Errorf("stderr %q shows the marker line", res.Stderr)
	}
	proctest.WaitGone(t, pids(t, res.Stdout, 3), 10*time.Second)
	f.assertNoRunDir(t)
}

func TestSignalledScript(t *testing.T) {
	t.Parallel()
	f := setup(t, ssh.Options{})
	res := f.run(t, f.job("echo before\nkill -KILL $$\n"))
	if res.Success() || res.ExitCode != -1 || res.TimedOut || !strings.Contains(res.Error, "signal KILL") || res.Stdout != "before\n" {
		t.Errorf("result %+v; want a failure by signal", res)
	}
}

// minimalEnv returns the variables of env's output lines, failing the test
// for one not in the minimal environment of a script with Env EXTRA.
func minimalEnv(t *testing.T, lines []string) map[string]string {
	t.Helper()
	allowed := map[string]bool{"EXTRA": true, "TMPDIR": true, "POSTROTATE_ROTATION_ID": true, "POSTROTATE_STEP": true,
		"POSTROTATE_ATTEMPT": true, "PWD": true, "SHLVL": true, "OLDPWD": true, "_": true}
	for _, n := range ssh.DefaultInheritEnv() {
		allowed[n] = true
	}
	seen := map[string]string{}
	for _, l := range lines {
		if l == "" {
			continue
		}
		name, value, _ := strings.Cut(l, "=")
		seen[name] = value
		if !allowed[name] {
			t.Errorf("script sees %s, not in the minimal environment", l)
		}
	}
	return seen
}

func TestRunDirectoryAndEnvironment(t *testing.T) {
	t.Parallel()
	f := setup(t, ssh.Options{Env: []string{"EXTRA=x y"}})
	job := f.job(`ls -ld "$PWD" "$0"
printf 'pwd=%s\ntmpdir=%s\n' "$PWD" "$TMPDIR"
env
`)
	job.RotationID, job.Step, job.Attempt = "rot 'quoted'", 7, 2
	res := f.run(t, job)
	lines := strings.Split(res.Stdout, "\n")
	if !res.Success() || len(lines) < 4 {
		t.Fatalf("result %+v", res)
	}
	for _, l := range lines[:2] {
		if !strings.HasPrefix(l, "drwx------") && !strings.HasPrefix(l, "-rwx------") {
			t.Errorf("want run directory 0700 and script 0700, got %q", l)
		}
	}
	dir := strings.TrimPrefix(lines[2], "pwd=")
	if filepath.Dir(dir) != f.runs || lines[3] != "tmpdir="+dir {
		t.Errorf("pwd %q, %q; want a directory under %s that is also TMPDIR", dir, lines[3], f.runs)
	}
	seen := minimalEnv(t, lines[4:])
	if seen["POSTROTATE_ROTATION_ID"] != "rot 'quoted'" || seen["POSTROTATE_STEP"] != "7" || seen["POSTROTATE_ATTEMPT"] != "2" ||
		seen["EXTRA"] != "x y" || seen["USER"] != sshdtest.User || seen["PATH"] == "" {
		t.Errorf("environment %v", seen)
	}
	f.assertNoRunDir(t)
}

func TestInterpreters(t *testing.T) {
	t.Parallel()
	f := setup(t, ssh.Options{})
	for _, tc := range []struct {
		name, file, command, content string
		wantPrefix, wantStdout       string
	}{
		{"Shebang", "x.py", "", "#!/bin/sh\necho shebang\n", "", "shebang\n"},
		{"PythonByExtension", "x.py", "", "import sys\nprint(sys.version_info[0])\n", "python3 ", "3\n"},
		{"ShellByDefault", "x", "", "echo sh\n", "/bin/sh ", "sh\n"},
		{"CommandPrefix", "x.sh", "/usr/bin/env python3 -u", "print('cmd')\n", "/usr/bin/env python3 -u ", "cmd\n"},
		{"ShebangWithEqualsInName", "a=b", "", "#!/bin/sh\necho eq\n", "", "eq\n"},
		{"QuoteInName", "it's.sh", "", "echo quoted\n", "/bin/sh ", "quoted\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			job := f.job(tc.content)
			job.Script.Name, job.Script.Command = tc.file, tc.command
			res := f.run(t, job)
			if !res.Success() || res.Stdout != tc.wantStdout {
				t.Fatalf("exit %d, error %q, stdout %q, stderr %q", res.ExitCode, res.Error, res.Stdout, res.Stderr)
			}
			path, ok := strings.CutPrefix(res.Command, tc.wantPrefix)
			if !ok || filepath.Dir(filepath.Dir(path)) != f.runs || filepath.Base(path) != tc.file {
				t.Errorf("command %q, want %q then the script's path", res.Command, tc.wantPrefix)
			}
		})
	}
}

func TestConnectionReused(t *testing.T) {
	t.Parallel()
	f := setup(t, ssh.Options{})
	for step := 1; step <= 20; step++ {
		job := f.job(`echo "$POSTROTATE_STEP"` + "\n")
		job.Step = step
		if res := f.run(t, job); res.Stdout != strconv.Itoa(step)+"\n" {
			t.Fatalf("step %d: result %+v", step, res)
		}
	}
	if n := f.dials.Load(); n != 1 {
		t.Errorf("%d connections dialled for 20 steps, want 1", n)
	}
	if n := f.sshd.Accepted(); n != 1 {
		t.Errorf("sshd accepted %d logins for 20 steps, want 1", n)
	}
}

func TestServerSessionLimit(t *testing.T) {
	t.Parallel()
	// The server allows 2 sessions per connection, the executor would open 8.
	f := setup(t, ssh.Options{}, "MaxSessions 2")
	var wg sync.WaitGroup
	results := make([]executor.Result, 6)
	errs := make([]error, len(results))
	for i := range results {
		wg.Go(func() {
			job := f.job("sleep 0.2\necho " + strconv.Itoa(i) + "\n")
			results[i], errs[i] = f.ssh.Run(context.Background(), job)
		})
	}
	wg.Wait()
	for i, res := range results {
		if errs[i] != nil || !res.Success() || res.Stdout != strconv.Itoa(i)+"\n" {
			t.Errorf("job %d: err %v, result %+v", i, errs[i], res)
		}
	}
	if n := f.dials.Load(); n != 1 {
		t.Errorf("%d connections, want 1", n)
	}
}

func TestDeadConnectionRedialed(t *testing.T) {
	t.Parallel()
	f := setup(t, ssh.Options{})
	f.run(t, f.job("echo one\n"))
	children := f.sshd.ConnectionPIDs(t)
	if len(children) == 0 {
		t.Fatal("no sshd process serves the connection")
	}
	for _, pid := range children {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	if res := f.run(t, f.job("echo two\n")); res.Stdout != "two\n" {
		t.Fatalf("result %+v", res)
	}
	if n := f.dials.Load(); n != 2 {
		t.Errorf("%d dials, want 2: the dead connection re-dialled once", n)
	}
}

// freezable is a connection that can be made to hang: reads block and
// writes vanish, as with a peer gone without a word.
type freezable struct {
	net.Conn
	frozen chan struct{}
	once   sync.Once
	closed chan struct{}
	cOnce  sync.Once
}

func (c *freezable) freeze() { c.once.Do(func() { close(c.frozen) }) }

func (c *freezable) Read(p []byte) (int, error) {
	select {
	case <-c.frozen:
		<-c.closed
		return 0, net.ErrClosed
	default:
	}
	return c.Conn.Read(p)
}

func (c *freezable) Write(p []byte) (int, error) {
	select {
	case <-c.frozen:
		return len(p), nil
	default:
	}
	return c.Conn.Write(p)
}

func (c *freezable) Close() error {
	c.cOnce.Do(func() { close(c.closed) })
	return c.Conn.Close()
}

func TestKeepAliveClosesHungConnection(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var conns []*freezable
	f := setup(t, ssh.Options{KeepAlive: 200 * time.Millisecond})
	f.hook = func(c net.Conn) net.Conn {
		fc := &freezable{Conn: c, frozen: make(chan struct{}), closed: make(chan struct{})}
		mu.Lock()
		conns = append(conns, fc)
		mu.Unlock()
		return fc
	}
	f.run(t, f.job("echo one\n"))
	mu.Lock()
	conns[0].freeze()
	mu.Unlock()
	// The next job finds the connection hung: the keepalive closes it and
	// the job goes on over a new one.
	if res := f.run(t, f.job("echo two\n")); res.Stdout != "two\n" {
		t.Fatalf("result %+v", res)
	}
	if n := f.dials.Load(); n != 2 {
		t.Errorf("%d dials, want 2", n)
	}
}

func TestUnreachable(t *testing.T) {
	t.Parallel()
	t.Run("Refused", func(t *testing.T) {
		t.Parallel()
		e := ssh.New(ssh.Options{})
		defer e.Close()
		port := sshdtest.FreePort(t)
		job := executor.Job{Script: executor.Script{Name: "x.sh", Content: []byte("echo never\n")},
			Target: &executor.Target{Host: "127.0.0.1", Port: port, Login: sshdtest.User, Password: "pw", InsecureIgnoreHostKey: true}}
		res, err := e.Run(context.Background(), job)
		addr := "127.0.0.1:" + strconv.Itoa(port)
		if !errors.Is(err, syscall.ECONNREFUSED) || !strings.Contains(err.Error(), addr) {
			t.Fatalf("err %v, want connection refused naming %s", err, addr)
		}
		if res.ExitCode != -1 || res.Error == "" {
			t.Errorf("result %+v", res)
		}
	})
	t.Run("NoSSHHandshake", func(t *testing.T) {
		t.Parallel()
		// A port that accepts connections but never speaks SSH.
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		var held []net.Conn
		var mu sync.Mutex
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				mu.Lock()
				held = append(held, c)
				mu.Unlock()
			}
		}()
		defer func() {
			mu.Lock()
			defer mu.Unlock()
			for _, c := range held {
				_ = c.Close()
			}
		}()
		e := ssh.New(ssh.Options{DialTimeout: 300 * time.Millisecond})
		defer e.Close()
		addr := l.Addr().String()
		port := l.Addr().(*net.TCPAddr).Port
		job := executor.Job{Script: executor.Script{Name: "x.sh", Content: []byte("echo never\n")},
			Target: &executor.Target{Host: "127.0.0.1", Port: port, Login: sshdtest.User, Password: "pw", InsecureIgnoreHostKey: true}}
		res, err := e.Run(context.Background(), job)
		if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), addr) {
			t.Fatalf("err %v, want a handshake timeout naming %s", err, addr)
		}
		// The result's times cover the attempt: the wait shows.
		if took := res.FinishedAt.Sub(res.StartedAt); took < 300*time.Millisecond {
			t.Errorf("result spans %s (%s to %s), want at least the 300ms dial timeout", took, res.StartedAt, res.FinishedAt)
		}
	})
}

func TestClose(t *testing.T) {
	t.Parallel()
	f := setup(t, ssh.Options{})
	f.run(t, f.job("echo ok\n"))
	if err := f.ssh.Close(); err != nil {
		t.Fatal(err)
	}
	if err := f.ssh.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := f.ssh.Run(context.Background(), f.job("echo never\n")); !errors.Is(err, ssh.ErrClosed) {
		t.Errorf("Run after Close: %v, want ErrClosed", err)
	}
}

func TestBackgroundChildHoldingStdout(t *testing.T) {
	t.Parallel()
	f := setup(t, ssh.Options{WaitDelay: 200 * time.Millisecond})
	res := f.run(t, f.job("sleep 300 &\necho \"pid $!\"\necho done\n"))
	if !res.Success() || !strings.HasSuffix(res.Stdout, "done\n") {
		t.Errorf("exit %d, error %q, stdout %q; want a success despite the open output", res.ExitCode, res.Error, res.Stdout)
	}
	pids(t, res.Stdout, 1) // killed at cleanup
}

func TestConnectionLostDuringRun(t *testing.T) {
	t.Parallel()
	f := setup(t, ssh.Options{KillGrace: 300 * time.Millisecond})
	pidFile := filepath.Join(sshdtest.UserDir(t), "pid")
	job := f.job("echo \"$$\" > " + pidFile + ".tmp && mv " + pidFile + ".tmp " + pidFile + "\nsleep 300\n")
	job.Script.Timeout = time.Minute
	type outcome struct {
		res executor.Result
		err error
	}
	done := make(chan outcome, 1)
	go func() {
		res, err := f.ssh.Run(context.Background(), job)
		done <- outcome{res, err}
	}()
	// Wait for the script to run, then cut the connection under it.
	var pid int
	deadline := time.Now().Add(30 * time.Second)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for pid == 0 {
		if b, err := os.ReadFile(pidFile); err == nil {
			pid, _ = strconv.Atoi(strings.TrimSpace(string(b)))
			continue
		}
		if time.Now().After(deadline) {
			t.Fatal("the script did not start")
		}
		<-tick.C
	}
	t.Cleanup(func() { _ = syscall.Kill(-pid, syscall.SIGKILL) }) // its group, whatever the test finds
	for _, p := range f.sshd.ConnectionPIDs(t) {
		_ = syscall.Kill(p, syscall.SIGKILL)
	}
	o := <-done
	if o.err != nil || o.res.Success() || o.res.ExitCode != -1 || !strings.Contains(o.res.Error, "lost") {
		t.Errorf("err %v, result %+v; want a result saying the connection was lost", o.err, o.res)
	}
	// Over a new connection, the script was killed and its directory removed.
	proctest.WaitGone(t, []int{pid}, 10*time.Second)
	f.assertNoRunDir(t)
}

func TestKillWhenServerHasNoSessionToSpare(t *testing.T) {
	t.Parallel()
	// The script's session is the only one the server allows: the kill
	// goes over a connection of its own.
	f := setup(t, ssh.Options{KillGrace: 300 * time.Millisecond}, "MaxSessions 1")
	job := f.job("echo \"pid $$\"\nsleep 300 &\necho \"pid $!\"\nwait\n")
	job.Script.Timeout = time.Second
	res := f.run(t, job)
	if !res.TimedOut || !strings.Contains(res.Error, "process tree killed") {
		t.Errorf("timed out %v, error %q", res.TimedOut, res.Error)
	}
	proctest.WaitGone(t, pids(t, res.Stdout, 2), 10*time.Second)
	f.assertNoRunDir(t)
	if n := f.dials.Load(); n != 2 {
		t.Errorf("%d dials, want 2: the pooled connection and the one for the kill", n)
	}
}
