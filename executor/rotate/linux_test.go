//go:build unix

package rotate_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/postrotate/postrotate/executor"
	"github.com/postrotate/postrotate/executor/local"
	"github.com/postrotate/postrotate/executor/rotate"
	"github.com/postrotate/postrotate/executor/ssh"
	"github.com/postrotate/postrotate/executor/ssh/sshdtest"
)

// linuxJob returns a job setting login's password from oldPW to newPW on
// target (nil: this machine).
func linuxJob(target *executor.Target, login, oldPW, newPW string) executor.Job {
	return executor.Job{
		RotationID: "rot-linux", Step: 1, Attempt: 1,
		Target:   target,
		Rotation: &executor.Rotation{Kind: executor.RotateLinux, Login: login, OldPassword: oldPW, NewPassword: newPW},
	}
}

func newRotator(t *testing.T, runs string) *rotate.Rotator {
	t.Helper()
	r := rotate.New(rotate.Options{
		SSH:   ssh.Options{TempDir: runs, KillGrace: time.Second},
		Local: local.Options{TempDir: t.TempDir(), KillGrace: time.Second},
	})
	t.Cleanup(func() { _ = r.Close() })
	return r
}

func run(t *testing.T, r *rotate.Rotator, job executor.Job) executor.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res, err := r.Run(ctx, job)
	if err != nil {
		t.Fatalf("Run: %v (result %+v)", err, res)
	}
	assertNoSecret(t, job, res, err)
	return res
}

// linuxSSHVictim is the user whose password TestLinuxSSH changes.
const linuxSSHVictim = "postrotate-rot1"

// linuxSSH is the fixture of TestLinuxSSH: a real sshd, a Rotator, and the
// victim's password as the subtests change it.
type linuxSSH struct {
	sshd     *sshdtest.Server
	r        *rotate.Rotator
	password string
}

// keyOnly returns the sshd's target logging in with the key alone.
func (f *linuxSSH) keyOnly() *executor.Target {
	target := f.sshd.Target()
	target.Password, target.PrivateKey = "", f.sshd.UserKeyPEM
	return target
}

// TestLinuxSSH rotates a user's password on a real sshd, as the SSH test
// user through sudo, and logs in with it. The subtests share the sudo rule
// file: they run one after the other.
func TestLinuxSSH(t *testing.T) {
	t.Parallel()
	f := &linuxSSH{sshd: sshdtest.Start(t, "AllowUsers "+sshdtest.User+" "+linuxSSHVictim), password: "Old-pw-1a"}
	f.r = newRotator(t, sshdtest.UserDir(t))
	sshdtest.CreateUser(t, linuxSSHVictim, f.password)
	for _, tc := range []struct {
		name string
		fn   func(*testing.T, *linuxSSH)
	}{
		{"NoSudoRule", testLinuxSSHNoSudoRule},
		{"SudoWithPassword", testLinuxSSHSudoWithPassword},
		{"SudoWithoutPassword", testLinuxSSHSudoWithoutPassword},
		{"WrongSudoPassword", testLinuxSSHWrongSudoPassword},
		{"NoSecretOnACommandLine", testLinuxSSHNoSecretOnACommandLine},
		{"InvalidLogin", testLinuxSSHInvalidLogin},
		{"Unreachable", testLinuxSSHUnreachable},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, f) })
	}
}

func testLinuxSSHNoSudoRule(t *testing.T, f *linuxSSH) {
	res := run(t, f.r, linuxJob(f.keyOnly(), linuxSSHVictim, f.password, "New-pw-never"))
	if res.ExitCode != 1 || res.Success() || res.Error == "" {
		t.Errorf("result %+v: want exit 1 and an error", res)
	}
	if !f.sshd.CanLogin(t, linuxSSHVictim, f.password) {
		t.Errorf("the password changed")
	}
}

func testLinuxSSHSudoWithPassword(t *testing.T, f *linuxSSH) {
	// The admin's password is the first line of the script's stdin,
	// its new password the second: sudo -S must read only the first,
	// or chpasswd gets no "user:password" line, or a line without a
	// ':' and exits 1.
	sshdtest.AllowSudo(t, sshdtest.User, false)
	newPW := "New-pw-2b:with colon"
	job := linuxJob(f.sshd.Target(), linuxSSHVictim, f.password, newPW)
	res := run(t, f.r, job)
	if !res.Success() {
		t.Fatalf("result %+v", res)
	}
	if want := fmt.Sprintf("password of %s changed on %s (linux)", linuxSSHVictim, f.sshd.Addr); res.Stdout != want {
		t.Errorf("stdout %q, want %q", res.Stdout, want)
	}
	if res.Command != "chpasswd" || res.System != "Linux" {
		t.Errorf("command %q, system %q", res.Command, res.System)
	}
	if !f.sshd.CanLogin(t, linuxSSHVictim, newPW) {
		t.Errorf("%s cannot log in with the new password", linuxSSHVictim)
	}
	if f.sshd.CanLogin(t, linuxSSHVictim, f.password) {
		t.Errorf("%s still logs in with the old password", linuxSSHVictim)
	}
	f.password = newPW
}

func testLinuxSSHSudoWithoutPassword(t *testing.T, f *linuxSSH) {
	sshdtest.AllowSudo(t, sshdtest.User, true)
	newPW := "New-pw-3c"
	res := run(t, f.r, linuxJob(f.keyOnly(), linuxSSHVictim, f.password, newPW))
	if !res.Success() {
		t.Fatalf("result %+v", res)
	}
	if !f.sshd.CanLogin(t, linuxSSHVictim, newPW) || f.sshd.CanLogin(t, linuxSSHVictim, f.password) {
		t.Errorf("the new password should work and the old one not")
	}
	f.password = newPW
}

func testLinuxSSHWrongSudoPassword(t *testing.T, f *linuxSSH) {
	sshdtest.AllowSudo(t, sshdtest.User, false)
	target := f.keyOnly() // logs in with the key, the password is for sudo
	target.Password = "Wrong-sudo-pw-4d"
	job := linuxJob(target, linuxSSHVictim, f.password, "New-pw-never-5e")
	res := run(t, f.r, job)
	if res.ExitCode != 1 || res.Success() || res.Error == "" {
		t.Errorf("result %+v: want exit 1 and an error", res)
	}
	// sudo had one try: after a wrong password it reads another line,
	// which must not be the "user:password" one.
	if strings.Contains(res.Stderr, "2 incorrect password attempts") {
		t.Errorf("sudo read the second line as a password: %q", res.Stderr)
	}
	if !f.sshd.CanLogin(t, linuxSSHVictim, f.password) {
		t.Errorf("the password changed")
	}
}

// testLinuxSSHNoSecretOnACommandLine holds the password database lock, so
// that chpasswd waits for it while every command line on the machine is
// read: sh, cat, sudo and chpasswd are all there then, and hold no secret.
func testLinuxSSHNoSecretOnACommandLine(t *testing.T, f *linuxSSH) {
	sshdtest.AllowSudo(t, sshdtest.User, false)
	newPW := "New-pw-6f-cmdline"
	job := linuxJob(f.sshd.Target(), linuxSSHVictim, f.password, newPW)
	secrets := []string{newPW, f.password, job.Target.Password}
	lock := lockPasswordDB(t)
	done := make(chan executor.Result, 1)
	go func() {
		res, _ := f.r.Run(context.Background(), job)
		done <- res
	}()
	watchCommandLines(t, secrets, done)
	_ = lock.Close()
	res := <-done
	if !res.Success() || !f.sshd.CanLogin(t, linuxSSHVictim, newPW) {
		t.Fatalf("result %+v: want the password changed once the lock is released", res)
	}
	f.password = newPW
}

// watchCommandLines reads every command line on the machine until 10 polls
// found chpasswd waiting, and fails if one holds a secret, or if the run
// ends (done) first, or after 30s.
func watchCommandLines(t *testing.T, secrets []string, done <-chan executor.Result) {
	t.Helper()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(30 * time.Second)
	for waiting := 0; waiting < 10; { // polls that found chpasswd
		cmdlines := commandLines(t)
		for _, cl := range cmdlines {
			for _, s := range secrets {
				if strings.Contains(cl, s) {
					t.Errorf("a secret is on the command line %q", cl)
				}
			}
		}
		if slices.ContainsFunc(cmdlines, func(cl string) bool { return strings.HasPrefix(cl, "chpasswd") }) {
			waiting++
		}
		select {
		case res := <-done:
			t.Fatalf("the run ended while the lock was held: %+v", res)
		case <-deadline:
			t.Fatalf("no chpasswd waiting for the lock within 30s")
		case <-tick.C:
		}
	}
}

func testLinuxSSHInvalidLogin(t *testing.T, f *linuxSSH) {
	for _, login := range []string{linuxSSHVictim + ":x", "-" + linuxSSHVictim, linuxSSHVictim + "\nroot", ""} {
		res, err := f.r.Run(context.Background(), linuxJob(f.sshd.Target(), login, f.password, "New-pw-never"))
		if !errors.Is(err, rotate.ErrInvalidLogin) || res.Error == "" {
			t.Errorf("login %q: got %v, result %+v: want ErrInvalidLogin", login, err, res)
		}
	}
}

func testLinuxSSHUnreachable(t *testing.T, f *linuxSSH) {
	target := f.sshd.Target()
	target.Port = sshdtest.FreePort(t)
	job := linuxJob(target, linuxSSHVictim, f.password, "New-pw-never")
	res, err := f.r.Run(context.Background(), job)
	want := net.JoinHostPort("127.0.0.1", strconv.Itoa(target.Port))
	if err == nil || !strings.Contains(err.Error(), want) || res.Error == "" {
		t.Fatalf("got %v, result %+v: want an error naming %s", err, res, want)
	}
	assertNoSecret(t, job, res, err)
}

// TestLinuxLocal rotates a user's password on this machine, as root.
func TestLinuxLocal(t *testing.T) {
	t.Parallel()
	const victim = "postrotate-rot2"
	sshd := sshdtest.Start(t, "AllowUsers "+sshdtest.User+" "+victim)
	oldPW, newPW := "Old-pw-6f", "New-pw-7g"
	sshdtest.CreateUser(t, victim, oldPW)
	r := newRotator(t, t.TempDir())
	res := run(t, r, linuxJob(nil, victim, oldPW, newPW))
	if !res.Success() {
		t.Fatalf("result %+v", res)
	}
	if want := "password of " + victim + " changed on this machine (linux)"; res.Stdout != want {
		t.Errorf("stdout %q, want %q", res.Stdout, want)
	}
	if res.Command != "chpasswd" || res.System != "Linux" {
		t.Errorf("command %q, system %q", res.Command, res.System)
	}
	if !sshd.CanLogin(t, victim, newPW) || sshd.CanLogin(t, victim, oldPW) {
		t.Errorf("the new password should work and the old one not")
	}
}

// TestLinuxTimeout holds the password database lock (lckpwdf's
// /etc/.pwd.lock), so chpasswd waits for it past the job's timeout and is
// killed. Not parallel: useradd waits for that lock too.
func TestLinuxTimeout(t *testing.T) {
	const victim = "postrotate-rot3"
	oldPW := "Old-pw-8h"
	sshdtest.CreateUser(t, victim, oldPW)
	before := shadowEntry(t, victim)
	r := newRotator(t, t.TempDir())

	lock := lockPasswordDB(t)
	job := linuxJob(nil, victim, oldPW, "New-pw-never-9i")
	job.Script.Timeout = time.Second
	res := run(t, r, job)
	_ = lock.Close() // releases the lock

	if !res.TimedOut || res.ExitCode != -1 || res.Success() || !strings.Contains(res.Error, "timed out") {
		t.Errorf("result %+v: want a timeout", res)
	}
	if after := shadowEntry(t, victim); after != before {
		t.Errorf("the password changed")
	}
}

// lockPasswordDB takes the lock lckpwdf takes, which chpasswd waits for
// (up to 15s), until the file returned is closed, or the test ends.
func lockPasswordDB(t *testing.T) *os.File {
	t.Helper()
	lock, err := os.OpenFile("/etc/.pwd.lock", os.O_WRONLY|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = lock.Close() })
	if err := syscall.FcntlFlock(lock.Fd(), syscall.F_SETLKW, &syscall.Flock_t{Type: syscall.F_WRLCK}); err != nil {
		t.Fatal(err)
	}
	return lock
}

// commandLines returns the command line of every process, arguments
// separated by spaces.
func commandLines(t *testing.T) []string {
	t.Helper()
	pids, err := filepath.Glob("/proc/[0-9]*/cmdline")
	if len(pids) == 0 {
		t.Skipf("no /proc to read command lines from (%v)", err)
	}
	var lines []string
	for _, p := range pids {
		b, err := os.ReadFile(p)
		if err == nil && len(b) > 0 {
			lines = append(lines, strings.TrimSpace(strings.ReplaceAll(string(b), "\x00", " ")))
		}
	}
	return lines
}

// shadowEntry returns user's line of /etc/shadow.
func shadowEntry(t *testing.T, name string) string {
	t.Helper()
	f, err := os.Open("/etc/shadow")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), name+":") {
			return sc.Text()
		}
	}
	t.Fatalf("no %s in /etc/shadow", name)
	return ""
}
