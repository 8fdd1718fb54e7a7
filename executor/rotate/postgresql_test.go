//go:build unix

package rotate_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/postrotate/postrotate/executor"
	"github.com/postrotate/postrotate/executor/rotate"
	"github.com/postrotate/postrotate/executor/rotate/pgtest"
	"github.com/postrotate/postrotate/executor/ssh/sshdtest"
)

// pgFixture is a PostgreSQL server and a rotator.
type pgFixture struct {
	pg  *pgtest.Server
	rot *rotate.Rotator
}

func setupPG(t *testing.T) *pgFixture {
	t.Helper()
	f := &pgFixture{pg: pgtest.Start(t), rot: rotate.New(rotate.Options{})}
	t.Cleanup(func() { _ = f.rot.Close() })
	return f
}

// job returns a job rotating role on the fixture's server as its admin.
func (f *pgFixture) job(role, oldPassword, newPassword string) executor.Job {
	return executor.Job{
		RotationID: "rot-pg", Step: 1, Attempt: 1,
		Target: &executor.Target{Host: f.pg.Host, Port: f.pg.Port, Login: f.pg.AdminUser, Password: f.pg.AdminPassword},
		Rotation: &executor.Rotation{
			Kind: executor.RotatePostgreSQL, Login: role,
			OldPassword: oldPassword, NewPassword: newPassword, SSLMode: "disable",
		},
	}
}

func (f *pgFixture) addr() string { return net.JoinHostPort(f.pg.Host, strconv.Itoa(f.pg.Port)) }

// assertNoSecret fails the test if a secret of the job appears in the
// result or err.
func assertNoSecret(t *testing.T, job executor.Job, res executor.Result, err error) {
	t.Helper()
	text := fmt.Sprintf("%+v", res)
	if err != nil {
		text += "\n" + err.Error()
	}
	secrets := append(job.Rotation.Secrets(), job.Target.Secrets()...)
	for _, s := range secrets {
		if s != "" && strings.Contains(text, s) {
			t.Errorf("a secret appears in the result or error: %s", text)
		}
	}
}

func TestPostgreSQLRotate(t *testing.T) {
	t.Parallel()
	f := setupPG(t)
	const role, oldPW, newPW = "svc", "Old-pw-1f3a", "New-pw-8c2d:'\"$x"
	f.pg.CreateRole(t, role, oldPW)
	job := f.job(role, oldPW, newPW)
	job.Rotation.SSLMode = "" // prefer: the server has no TLS, the plain fallback is used

	res, err := f.rot.Run(context.Background(), job)
	if err != nil || !res.Success() {
		t.Fatalf("Run: %v (result %+v)", err, res)
	}
	if want := fmt.Sprintf("password of %s changed on %s (postgresql)", role, f.addr()); res.Stdout != want {
		t.Errorf("stdout %q, want %q", res.Stdout, want)
	}
	if res.Command != `ALTER ROLE "svc"` || res.System != "Linux" {
		t.Errorf("command %q, system %q", res.Command, res.System)
	}
	if res.StartedAt.IsZero() || res.FinishedAt.Before(res.StartedAt) {
		t.Errorf("times %v, %v", res.StartedAt, res.FinishedAt)
	}
	assertNoSecret(t, job, res, err)
	if !f.pg.CanLogin(t, role, newPW) {
		t.Errorf("%s cannot log in with the new password", role)
	}
	if f.pg.CanLogin(t, role, oldPW) {
		t.Errorf("%s still logs in with the old password", role)
	}
	checkPGLog(t, f, newPW, "New-pw-8c2d", oldPW, f.pg.AdminPassword)

	t.Run("Rollback", func(t *testing.T) {
		back := f.job(role, newPW, oldPW)
		if res, err := f.rot.Run(context.Background(), back); err != nil || !res.Success() {
			t.Fatalf("Run: %v (result %+v)", err, res)
		}
		if !f.pg.CanLogin(t, role, oldPW) || f.pg.CanLogin(t, role, newPW) {
			t.Errorf("after the rollback the old password should work and the new one not")
		}
	})
}

// checkPGLog checks that the server logged the statement (log_statement =
// 'all'), with a verifier and never a password.
func checkPGLog(t *testing.T, f *pgFixture, passwords ...string) {
	t.Helper()
	log := f.pg.Log()
	if !strings.Contains(log, `ALTER ROLE "svc" PASSWORD 'SCRAM-SHA-256$4096:`) {
		t.Errorf("the server did not log the ALTER ROLE with a SCRAM verifier:\n%s", log)
	}
	for _, secret := range passwords {
		if strings.Contains(log, secret) {
			t.Errorf("the server log holds a password:\n%s", log)
		}
	}
}

// TestPostgreSQLQuotedRole rotates a role whose name needs quoting, with
// a double quote in it.
func TestPostgreSQLQuotedRole(t *testing.T) {
	t.Parallel()
	f := setupPG(t)
	const role, oldPW, newPW = `svc-app "x"`, "Old-pw-q1", "New-pw-q2"
	f.pg.CreateRole(t, role, oldPW)
	f.pg.CreateRole(t, "svc", oldPW) // a role the name might be mistaken for
	job := f.job(role, oldPW, newPW)
	res, err := f.rot.Run(context.Background(), job)
	if err != nil || !res.Success() {
		t.Fatalf("Run: %v (result %+v)", err, res)
	}
	if res.Command != `ALTER ROLE "svc-app ""x"""` {
		t.Errorf("command %q", res.Command)
	}
	if !f.pg.CanLogin(t, role, newPW) || f.pg.CanLogin(t, role, oldPW) {
		t.Errorf("%s: the new password should work and the old one not", role)
	}
	if !f.pg.CanLogin(t, "svc", oldPW) {
		t.Errorf("the password of svc changed")
	}
}

// TestPostgreSQLNonASCII rotates to a password SASLprep leaves as it is: the
// verifier of its bytes is the one clients use.
func TestPostgreSQLNonASCII(t *testing.T) {
	t.Parallel()
	f := setupPG(t)
	const role, oldPW, newPW = "svc_utf8", "Old-pw-u1", "Nouveau-mot-de-passe-été-密码"
	f.pg.CreateRole(t, role, oldPW)
	res, err := f.rot.Run(context.Background(), f.job(role, oldPW, newPW))
	if err != nil || !res.Success() {
		t.Fatalf("Run: %v (result %+v)", err, res)
	}
	if !f.pg.CanLogin(t, role, newPW) {
		t.Errorf("%s cannot log in with the new password", role)
	}
}

// TestPostgreSQLFailures covers the changes that fail: on the server (a
// Result) and before it (an error).
func TestPostgreSQLFailures(t *testing.T) {
	t.Parallel()
	f := setupPG(t)
	f.pg.CreateRole(t, "svc", failOldPW)
	for _, tc := range []struct {
		name string
		fn   func(*testing.T, *pgFixture)
	}{
		{"NoSuchRole", testPGFailNoSuchRole},
		{"WrongAdminPassword", testPGFailWrongAdminPassword},
		{"NotPermitted", testPGFailNotPermitted},
		{"Unreachable", testPGFailUnreachable},
		{"Canceled", testPGFailCanceled},
		{"Timeout", testPGFailTimeout},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, f) })
	}
}

// The passwords of the role svc that TestPostgreSQLFailures fails to change.
const failOldPW, failNewPW = "Old-pw-f1", "New-pw-f2"

func testPGFailNoSuchRole(t *testing.T, f *pgFixture) {
	job := f.job("nobody", failOldPW, failNewPW)
	res, err := f.rot.Run(context.Background(), job)
	if err != nil {
		t.Fatalf("Run: %v: an SQL error is a result", err)
	}
	if res.ExitCode != 1 || res.Success() || !strings.Contains(res.Error, `role "nobody" does not exist`) {
		t.Errorf("result %+v: want exit 1 and the server's error", res)
	}
	assertNoSecret(t, job, res, err)
}

func testPGFailWrongAdminPassword(t *testing.T, f *pgFixture) {
	job := f.job("svc", failOldPW, failNewPW)
	job.Target.Password = "Wrong-admin-pw-77"
	res, err := f.rot.Run(context.Background(), job)
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "28P01" {
		t.Fatalf("got %v, want a refused login (28P01)", err)
	}
	if !strings.Contains(err.Error(), f.addr()) || res.Error == "" || res.ExitCode != -1 {
		t.Errorf("error %q, result %+v: want the address named and exit -1", err, res)
	}
	assertNoSecret(t, job, res, err)
	if !f.pg.CanLogin(t, "svc", failOldPW) {
		t.Errorf("the password changed")
	}
}

// testPGFailNotPermitted changes a role as svc, which has no CREATEROLE:
// the server refuses, after login.
func testPGFailNotPermitted(t *testing.T, f *pgFixture) {
	job := f.job("postgres", failOldPW, failNewPW)
	job.Target.Login, job.Target.Password = "svc", failOldPW
	res, err := f.rot.Run(context.Background(), job)
	if err != nil || res.ExitCode != 1 || !strings.Contains(res.Error, "SQLSTATE 42501") {
		t.Errorf("got %v, result %+v: want exit 1 and insufficient_privilege (42501)", err, res)
	}
	assertNoSecret(t, job, res, err)
}

func testPGFailUnreachable(t *testing.T, f *pgFixture) {
	job := f.job("svc", failOldPW, failNewPW)
	job.Target.Port = sshdtest.FreePort(t)
	addr := net.JoinHostPort(f.pg.Host, strconv.Itoa(job.Target.Port))
	res, err := f.rot.Run(context.Background(), job)
	if err == nil || !strings.Contains(err.Error(), addr) {
		t.Fatalf("got %v, want an error naming %s", err, addr)
	}
	if res.Error == "" || res.ExitCode != -1 {
		t.Errorf("result %+v: want the error and exit -1", res)
	}
	assertNoSecret(t, job, res, err)
}

func testPGFailCanceled(t *testing.T, f *pgFixture) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	res, err := f.rot.Run(ctx, f.job("svc", failOldPW, failNewPW))
	if !errors.Is(err, context.Canceled) || res.Error == "" {
		t.Errorf("got %v, result %+v: want context.Canceled", err, res)
	}
}

// testPGFailTimeout logs in to a listener that accepts and never answers:
// the login cannot finish within the job's timeout.
func testPGFailTimeout(t *testing.T, f *pgFixture) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := l.Accept()
		if err == nil {
			accepted <- c
		}
		close(accepted)
	}()
	job := f.job("svc", failOldPW, failNewPW)
	job.Target.Port = l.Addr().(*net.TCPAddr).Port
	job.Script.Timeout = 500 * time.Millisecond
	res, err := f.rot.Run(context.Background(), job)
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), l.Addr().String()) {
		t.Errorf("got %v, want a deadline naming %s", err, l.Addr())
	}
	if res.Error == "" || res.Success() {
		t.Errorf("result %+v", res)
	}
	l.Close()
	for c := range accepted {
		c.Close()
	}
}
