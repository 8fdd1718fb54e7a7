//go:build unix

// Package sshdtest starts a real OpenSSH sshd on a loopback port for tests:
// the SSH executor's own, and end-to-end tests of workers and coordinators
// that run steps over SSH. The server logs in one dedicated test user,
// [User], with its password ([Password]) or a per-server ed25519 key;
// sshd and the user need root, and a test without them is skipped saying
// exactly what is missing.
package sshdtest

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	gossh "golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/postrotate/postrotate/executor"
)

const (
	// Path is where the tests look for sshd.
	Path = "/usr/sbin/sshd"
	// User is the login of the test user.
	User = "postrotate-test"
)

// The test user is created once (when missing) and given a password kept in
// a root-only file, the same for every test process: tests of several
// packages or engineers running at once must not change it under each
// other.
var (
	userOnce     sync.Once
	userSkip     string
	userErr      error
	userPassword string
	userUID      int
	userGID      int
)

// EnsureUser makes sure the test user exists with a known password, or
// skips the test saying what is missing.
func EnsureUser(t testing.TB) {
	t.Helper()
	userOnce.Do(func() {
		_, err := user.Lookup(User)
		exists := err == nil
		switch {
		case os.Geteuid() != 0 && !exists:
			userSkip = "test user " + User + " does not exist and the tests do not run as root to create it: run them as root, or useradd -m -s /bin/bash " + User
			return
		case os.Geteuid() != 0:
			userSkip = "sshd must run as root to log in as " + User + ": run the tests as root"
			return
		}
		if !exists {
			// Another test process may create it at the same moment.
			if out, err := exec.Command("useradd", "-m", "-s", "/bin/bash", User).CombinedOutput(); err != nil {
				if _, lerr := user.Lookup(User); lerr != nil {
					userErr = fmt.Errorf("useradd %s: %v: %s", User, err, out)
					return
				}
			}
		}
		u, err := user.Lookup(User)
		if err != nil {
			userErr = err
			return
		}
		userUID, _ = strconv.Atoi(u.Uid)
		userGID, _ = strconv.Atoi(u.Gid)
		if userPassword, userErr = sharedPassword(); userErr != nil {
			return
		}
		cmd := exec.Command("chpasswd")
		cmd.Stdin = strings.NewReader(User + ":" + userPassword + "\n")
		if out, err := cmd.CombinedOutput(); err != nil {
			userErr = fmt.Errorf("chpasswd: %v: %s", err, out)
			return
		}
		// sshd's privilege separation directory.
		if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
			userErr = err
		}
	})
	if userSkip != "" {
		t.Skip(userSkip)
	}
	if userErr != nil {
		t.Fatal(userErr)
	}
}

// sharedPassword returns the test user's password from a root-only file,
// creating it with a random password on first use (atomically: the first
// process to link its file wins).
func sharedPassword() (string, error) {
	cache, err := os.UserCacheDir()
	if err != nil {
		return "", err
	}
	dir := filepath.Join(cache, "postrotate-test")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	path := filepath.Join(dir, "password")
	if b, err := os.ReadFile(path); err == nil && len(b) > 0 {
		return string(b), nil
	}
	var b [12]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	f, err := os.CreateTemp(dir, "password-")
	if err != nil {
		return "", err
	}
	defer os.Remove(f.Name())
	_, err = f.WriteString("Pw-" + hex.EncodeToString(b[:]))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", err
	}
	if err := os.Link(f.Name(), path); err != nil && !errors.Is(err, fs.ErrExist) {
		return "", err
	}
	pw, err := os.ReadFile(path)
	return string(pw), err
}

// Server is a real OpenSSH server on a loopback port, logging in the test
// user with its password or the user key.
type Server struct {
	// Addr is the host:port sshd listens on.
	Addr string
	// Dir holds its configuration and keys.
	Dir string
	// HostKey is its public host key.
	HostKey gossh.PublicKey
	// UserKey logs in the test user; UserKeyPEM is it in OpenSSH format,
	// unencrypted.
	UserKey    ed25519.PrivateKey
	UserKeyPEM string

	cmd *exec.Cmd
	log *logLines
}

// Start starts sshd; config lines come before the defaults, so they
// win (sshd keeps the first value of a keyword).
func Start(t testing.TB, config ...string) *Server {
	t.Helper()
	if _, err := os.Stat(Path); err != nil {
		t.Skip("sshd not found at /usr/sbin/sshd: install openssh-server")
	}
	EnsureUser(t)
	dir := t.TempDir()
	// sshd reads authorized_keys as the user: let it through.
	for _, d := range []string{dir, filepath.Dir(dir)} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	hostPub, hostPriv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	userPub, userPriv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	d := &Server{Dir: dir, UserKey: userPriv, log: &logLines{changed: make(chan struct{})}}
	if d.HostKey, err = gossh.NewPublicKey(hostPub); err != nil {
		t.Fatal(err)
	}
	userSSHPub, err := gossh.NewPublicKey(userPub)
	if err != nil {
		t.Fatal(err)
	}
	d.UserKeyPEM = MarshalKey(t, userPriv, "")
	writeFile(t, filepath.Join(dir, "host_ed25519"), MarshalKey(t, hostPriv, ""), 0o600)
	writeFile(t, filepath.Join(dir, "authorized_keys"), string(gossh.MarshalAuthorizedKey(userSSHPub)), 0o644)

	d.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(FreePort(t)))
	cfg := append(append([]string(nil), config...),
		"ListenAddress "+d.Addr,
		"HostKey "+filepath.Join(dir, "host_ed25519"),
		"AuthorizedKeysFile "+filepath.Join(dir, "authorized_keys"),
		"PasswordAuthentication yes",
		"PubkeyAuthentication yes",
		"KbdInteractiveAuthentication no",
		"UsePAM no",
		"StrictModes no",
		"PidFile "+filepath.Join(dir, "sshd.pid"),
		"MaxSessions 10",
		"MaxStartups 100:30:200",
		"LogLevel VERBOSE",
		"AllowUsers "+User,
		"PermitRootLogin no",
		"UseDNS no",
		"PrintMotd no",
	)
	writeFile(t, filepath.Join(dir, "sshd_config"), strings.Join(cfg, "\n")+"\n", 0o600)
	d.start(t)
	return d
}

// start runs sshd and waits until it listens.
func (d *Server) start(t testing.TB) {
	t.Helper()
	d.cmd = exec.Command(Path, "-D", "-e", "-f", filepath.Join(d.Dir, "sshd_config"))
	d.cmd.Stderr = d.log
	d.cmd.WaitDelay = 5 * time.Second // connection children may hold stderr
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	cmd := d.cmd
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("sshd log:\n%s", d.log.String())
		}
	})
	_, port, _ := net.SplitHostPort(d.Addr)
	d.log.wait(t, 10*time.Second, "Server listening on 127.0.0.1 port "+port)
}

// ConnectionPIDs returns the pids of sshd's per-connection processes: the
// descendants of the listener that are still sshd (not the sessions'
// shells and scripts).
func (d *Server) ConnectionPIDs(t testing.TB) []int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Skipf("no /proc to find sshd's processes: %v", err)
	}
	parent := map[int]int{}
	comm := map[int]string{}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		open, closing := bytes.IndexByte(stat, '('), bytes.LastIndexByte(stat, ')')
		if open < 0 || closing < open {
			continue
		}
		f := strings.Fields(string(stat[closing+1:]))
		if len(f) > 1 {
			parent[pid], _ = strconv.Atoi(f[1])
			comm[pid] = string(stat[open+1 : closing])
		}
	}
	var pids []int
	for pid := range parent {
		if comm[pid] != "sshd" {
			continue
		}
		for p := parent[pid]; p > 1; p = parent[p] {
			if p == d.cmd.Process.Pid {
				pids = append(pids, pid)
				break
			}
		}
	}
	return pids
}

// Accepted counts the logins sshd accepted.
func (d *Server) Accepted() int { return strings.Count(d.log.String(), "Accepted ") }

// Target returns the target logging in with the password and checking the
// host key against a known_hosts line.
func (d *Server) Target() *executor.Target {
	return &executor.Target{
		Host: "127.0.0.1", Port: d.Port(), Login: User, Password: userPassword,
		KnownHosts: d.KnownHosts(),
	}
}

// Port returns the port sshd listens on.
func (d *Server) Port() int {
	_, p, _ := net.SplitHostPort(d.Addr)
	n, _ := strconv.Atoi(p)
	return n
}

// KnownHosts returns a known_hosts file holding the server's key.
func (d *Server) KnownHosts() string {
	return "# test\n" + knownhosts.Line([]string{d.Addr}, d.HostKey) + "\n"
}

// Pinned returns the server's key in authorized_keys format.
func (d *Server) Pinned() string { return string(gossh.MarshalAuthorizedKey(d.HostKey)) }

// UserDir returns a directory owned by the test user, under which runs go.
func UserDir(t testing.TB) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "runs")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(dir, userUID, userGID); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{filepath.Dir(dir), filepath.Dir(filepath.Dir(dir))} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// MarshalKey returns key in OpenSSH PEM format, encrypted with passphrase
// when it is not empty.
func MarshalKey(t testing.TB, key ed25519.PrivateKey, passphrase string) string {
	t.Helper()
	var block *pem.Block
	var err error
	if passphrase == "" {
		block, err = gossh.MarshalPrivateKey(key, "")
	} else {
		block, err = gossh.MarshalPrivateKeyWithPassphrase(key, "", []byte(passphrase))
	}
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(block))
}

func writeFile(t testing.TB, name, content string, perm os.FileMode) {
	t.Helper()
	if err := os.WriteFile(name, []byte(content), perm); err != nil {
		t.Fatal(err)
	}
}

// FreePort returns a loopback port nothing listens on.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// logLines collects sshd's log and tells waiters when it grows.
type logLines struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	changed chan struct{} // closed and replaced on every write
}

func (l *logLines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf.Write(p)
	close(l.changed)
	l.changed = make(chan struct{})
	return len(p), nil
}

func (l *logLines) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// wait waits until the log holds want.
func (l *logLines) wait(t testing.TB, within time.Duration, want string) {
	t.Helper()
	deadline := time.NewTimer(within)
	defer deadline.Stop()
	for {
		l.mu.Lock()
		found, changed := strings.Contains(l.buf.String(), want), l.changed
		l.mu.Unlock()
		if found {
			return
		}
		select {
		case <-changed:
		case <-deadline.C:
			t.Fatalf("sshd log has no %q within %s:\n%s", want, within, l.String())
		}
	}
}

// Password returns the test user's password. Call it after [EnsureUser] or
// [Start].
func Password() string { return userPassword }

// Log returns what sshd logged so far.
func (d *Server) Log() string { return d.log.String() }

// WaitLog waits until sshd's log holds want, failing the test after within.
func (d *Server) WaitLog(t testing.TB, within time.Duration, want string) {
	t.Helper()
	d.log.wait(t, within, want)
}

// CreateUser creates a throwaway Linux user (shell /bin/sh, a home
// directory) with password, removed with userdel -r when the test ends. It
// skips the test, saying what is missing, without root or useradd.
func CreateUser(t testing.TB, name, password string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("creating the throwaway user " + name + " needs root: run the tests as root")
	}
	if _, err := exec.LookPath("useradd"); err != nil {
		t.Skip("useradd not found: install passwd")
	}
	if _, err := user.Lookup(name); err == nil { // left by an interrupted run
		_ = exec.Command("userdel", "-r", name).Run()
	}
	if out, err := exec.Command("useradd", "-m", "-s", "/bin/sh", name).CombinedOutput(); err != nil {
		t.Fatalf("useradd %s: %v: %s", name, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("userdel", "-r", name).CombinedOutput(); err != nil {
			t.Logf("userdel -r %s: %v: %s", name, err, out)
		}
	})
	cmd := exec.Command("chpasswd")
	cmd.Stdin = strings.NewReader(name + ":" + password + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("chpasswd: %v: %s", err, out)
	}
}

// AllowSudo lets login run chpasswd as root through sudo — with its
// password, or without (nopasswd) — until the test ends, with a sudoers
// file of its own. It skips the test when sudo is not installed.
func AllowSudo(t testing.TB, login string, nopasswd bool) {
	t.Helper()
	if _, err := exec.LookPath("sudo"); err != nil {
		t.Skip("sudo not found: install sudo")
	}
	tag := ""
	if nopasswd {
		tag = "NOPASSWD: "
	}
	rule := fmt.Sprintf("%s ALL=(root) %s/usr/sbin/chpasswd\n", login, tag)
	if visudo, err := exec.LookPath("visudo"); err == nil {
		check := filepath.Join(t.TempDir(), "sudoers")
		writeFile(t, check, rule, 0o440)
		if out, err := exec.Command(visudo, "-cf", check).CombinedOutput(); err != nil {
			t.Fatalf("visudo -cf: %v: %s", err, out)
		}
	}
	// sudo skips files whose names hold a dot: the login's may.
	var b [6]byte
	_, _ = rand.Read(b[:])
	file := "/etc/sudoers.d/postrotate-test-" + hex.EncodeToString(b[:])
	writeFile(t, file, rule, 0o440)
	if err := os.Chmod(file, 0o440); err != nil { // whatever the umask
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.Remove(file) })
}

// CanLogin reports whether login logs in to the server with password; an
// error other than a refused authentication fails the test.
func (d *Server) CanLogin(t testing.TB, login, password string) bool {
	t.Helper()
	tried := false
	cfg := &gossh.ClientConfig{
		User: login,
		Auth: []gossh.AuthMethod{gossh.PasswordCallback(func() (string, error) {
			tried = true
			return password, nil
		})},
		HostKeyCallback: gossh.FixedHostKey(d.HostKey),
		Timeout:         30 * time.Second,
	}
	c, err := gossh.Dial("tcp", d.Addr, cfg)
	switch {
	case err == nil:
		_ = c.Close()
		return true
	case tried:
		return false
	}
	t.Fatalf("ssh %s@%s: %v", login, d.Addr, err)
	return false
}
