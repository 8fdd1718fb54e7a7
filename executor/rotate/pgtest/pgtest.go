//go:build unix

// Package pgtest starts a real PostgreSQL server for tests: the PostgreSQL
// rotator's own, and end-to-end tests of workers that rotate roles.
//
// Each [Server] is a cluster of its own, made by initdb in a test
// directory, listening on 127.0.0.1 at a free port with its unix sockets in
// that directory, and stopped (pg_ctl stop -m immediate) when the test
// ends; its log is logged when the test failed. TCP logins need
// SCRAM-SHA-256 (password_encryption = scram-sha-256) and every statement
// is logged (log_statement = 'all'), so a test can look for a secret in
// [Server.Log]. The helpers' own statements are not logged.
//
// The server binaries are looked for in /usr/lib/postgresql/*/bin (Debian,
// Ubuntu), the highest version first; a test without them is skipped
// saying what to install. initdb refuses to run as root: when the tests
// run as root, the server runs as the postgres user that installing
// postgresql creates.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// BinGlob is where the tests look for the server binaries.
const BinGlob = "/usr/lib/postgresql/*/bin"

// OSUser is the user the server runs as when the tests run as root.
const OSUser = "postgres"

// AdminUser is the login of the admin role every server has: LOGIN
// CREATEROLE, not a superuser.
const AdminUser = "postrotate_admin"

// superuser is the bootstrap superuser, reached over the unix socket.
const superuser = "postgres"

// opTimeout bounds each step of starting, querying and stopping a server.
const opTimeout = time.Minute

// Server is a running PostgreSQL cluster.
type Server struct {
	// Host and Port are where it listens for TCP: 127.0.0.1 and a free
	// port.
	Host string
	Port int
	// AdminUser and AdminPassword log in the admin role (LOGIN
	// CREATEROLE) over TCP.
	AdminUser     string
	AdminPassword string

	bin     string              // directory of the binaries
	dir     string              // owned by the server's user: data, sockets, log
	cred    *syscall.Credential // the server's user; nil: the tests' own
	logPath string
}

// Start initialises and starts a cluster, with config lines appended to
// its postgresql.conf (the last value of a setting wins), and creates the
// admin role.
func Start(t testing.TB, config ...string) *Server {
	t.Helper()
	bin := findBin(t)
	s := &Server{Host: "127.0.0.1", AdminUser: AdminUser, bin: bin}
	if os.Geteuid() == 0 {
		s.cred = osUser(t)
	}
	base := t.TempDir()
	// The server's user must reach its directory under the test's.
	for _, d := range []string{base, filepath.Dir(base)} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	s.dir = filepath.Join(base, "pg")
	if err := os.Mkdir(s.dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if s.cred != nil {
		if err := os.Chown(s.dir, int(s.cred.Uid), int(s.cred.Gid)); err != nil {
			t.Fatal(err)
		}
	}
	s.logPath = filepath.Join(s.dir, "postgresql.log")
	data := s.data()
	s.run(t, "initdb", "-D", data, "-U", superuser, "--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync")
	writeFile(t, filepath.Join(data, "pg_hba.conf"), strings.Join([]string{
		"local all all trust", // the socket directory is the server user's alone
		"host all all 127.0.0.1/32 scram-sha-256",
	}, "\n")+"\n")
	conf := append([]string{
		"listen_addresses = '127.0.0.1'",
		"unix_socket_directories = " + literal(s.dir),
		"password_encryption = 'scram-sha-256'",
		"log_statement = 'all'",
		"logging_collector = off",
		"log_line_prefix = '%m [%p] %q%u@%d '",
		"max_connections = 20",
		"shared_buffers = 16MB",
		"fsync = off",
		"synchronous_commit = off",
		"full_page_writes = off",
	}, config...)
	appendFile(t, filepath.Join(data, "postgresql.conf"), "\n# pgtest\n"+strings.Join(conf, "\n")+"\n")

	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
		defer cancel()
		if out, err := s.command(ctx, "pg_ctl", "-D", data, "-m", "immediate", "-w", "stop").CombinedOutput(); err != nil && s.Port != 0 {
			t.Errorf("pg_ctl stop: %v: %s", err, out)
		}
		if t.Failed() {
			t.Logf("postgresql log:\n%s", s.Log())
		}
	})
	s.start(t)

	var b [16]byte
	_, _ = rand.Read(b[:])
	s.AdminPassword = "Admin-" + hex.EncodeToString(b[:])
	s.superExec(t, "CREATE ROLE "+ident(AdminUser)+" LOGIN CREATEROLE PASSWORD "+literal(s.AdminPassword))
	return s
}

// start starts the server on a free port, trying another port when the
// one found was taken meanwhile.
func (s *Server) start(t testing.TB) {
	t.Helper()
	var out []byte
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		port := freePort(t)
		appendFile(t, filepath.Join(s.data(), "postgresql.conf"), fmt.Sprintf("port = %d\n", port))
		ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
		out, err = s.command(ctx, "pg_ctl", "-D", s.data(), "-l", s.logPath, "-w", "-t", "60", "start").CombinedOutput()
		cancel()
		if err == nil {
			s.Port = port
			return
		}
		if !strings.Contains(s.Log(), "could not bind") {
			break
		}
	}
	t.Fatalf("pg_ctl start: %v: %s\nlog:\n%s", err, out, s.Log())
}

// CreateRole creates a role that can log in with password, as the admin
// role (so the admin may change its password, on PostgreSQL 16 too). The
// statement is not logged.
func (s *Server) CreateRole(t testing.TB, name, password string) {
	t.Helper()
	s.superExec(t, "SET ROLE "+ident(s.AdminUser), "CREATE ROLE "+ident(name)+" LOGIN PASSWORD "+literal(password))
}

// CanLogin reports whether role logs in over TCP with password; an error
// other than a refused password fails the test.
func (s *Server) CanLogin(t testing.TB, role, password string) bool {
	t.Helper()
	cfg := s.config(t, fmt.Sprintf("host=%s port=%d dbname=postgres sslmode=disable", s.Host, s.Port))
	cfg.User, cfg.Password = role, password
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	conn, err := pgconn.ConnectConfig(ctx, cfg)
	var pgErr *pgconn.PgError
	switch {
	case err == nil:
		_ = conn.Close(ctx)
		return true
	case errors.As(err, &pgErr) && pgErr.Code == "28P01": // invalid_password
		return false
	}
	t.Fatalf("log in as %s: %v", role, err)
	return false
}

// Log returns what the server logged so far.
func (s *Server) Log() string {
	b, _ := os.ReadFile(s.logPath)
	return string(b)
}

// superExec runs statements as the superuser over the unix socket, with
// statement logging off.
func (s *Server) superExec(t testing.TB, statements ...string) {
	t.Helper()
	cfg := s.config(t, fmt.Sprintf("host=%s port=%d dbname=postgres", s.dir, s.Port))
	cfg.User = superuser
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	conn, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatalf("connect as %s over the unix socket: %v", superuser, err)
	}
	defer conn.Close(ctx) //nolint:errcheck // nothing left to do with it
	for _, st := range append([]string{"SET log_statement = 'none'"}, statements...) {
		if _, err := conn.Exec(ctx, st).ReadAll(); err != nil {
			t.Fatalf("%s: %v", strings.SplitN(st, " PASSWORD ", 2)[0], err)
		}
	}
}

// config parses a connection string, without the environment's
// PGPASSWORD or password file mattering: the password is set after.
func (s *Server) config(t testing.TB, connString string) *pgconn.Config {
	t.Helper()
	cfg, err := pgconn.ParseConfig(connString)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Password = ""
	return cfg
}

func (s *Server) data() string { return filepath.Join(s.dir, "data") }

// command returns a command running one of the server binaries as the
// server's user, in its directory.
func (s *Server) command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, filepath.Join(s.bin, name), args...)
	cmd.Dir = s.dir
	cmd.Env = []string{"PATH=" + s.bin + ":/usr/bin:/bin", "LANG=C", "LC_ALL=C", "HOME=" + s.dir}
	if s.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred}
	}
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// run runs a server binary to completion, failing the test if it fails.
func (s *Server) run(t testing.TB, name string, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	if out, err := s.command(ctx, name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v: %s", name, err, out)
	}
}

// writeFile replaces the content of a file of the server's, keeping its
// owner.
func writeFile(t testing.TB, name, content string) {
	t.Helper()
	openWrite(t, name, os.O_TRUNC, content)
}

// appendFile adds content at the end of a file of the server's.
func appendFile(t testing.TB, name, content string) {
	t.Helper()
	openWrite(t, name, os.O_APPEND, content)
}

func openWrite(t testing.TB, name string, flag int, content string) {
	t.Helper()
	f, err := os.OpenFile(name, os.O_WRONLY|flag, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.WriteString(content)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
}

// findBin returns the directory of the highest installed server version, or
// skips the test.
func findBin(t testing.TB) string {
	t.Helper()
	initdbs, _ := filepath.Glob(filepath.Join(BinGlob, "initdb"))
	if len(initdbs) == 0 {
		t.Skip("PostgreSQL server binaries not found (" + BinGlob + "/initdb): install postgresql")
	}
	version := func(path string) int {
		n, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(path))))
		return n
	}
	return filepath.Dir(slices.MaxFunc(initdbs, func(a, b string) int { return version(a) - version(b) }))
}

// osUser returns the credential of the server's user, or skips the test.
func osUser(t testing.TB) *syscall.Credential {
	t.Helper()
	u, err := user.Lookup(OSUser)
	if err != nil {
		t.Skip("no " + OSUser + " user to run the PostgreSQL server as (initdb refuses root): install postgresql")
	}
	uid, _ := strconv.ParseUint(u.Uid, 10, 32)
	gid, _ := strconv.ParseUint(u.Gid, 10, 32)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
}

// freePort returns a loopback port nothing listens on.
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// ident quotes a role name.
func ident(name string) string { return pgx.Identifier{name}.Sanitize() }

// literal quotes a string constant (standard_conforming_strings is on).
func literal(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }
