package ssh

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/postrotate/postrotate/executor"
	gossh "golang.org/x/crypto/ssh"
)

// Options configures an SSH executor. A zero field means its default.
type Options struct {
	// DialTimeout bounds connecting to a target: TCP connect, SSH handshake
	// and login. Defaults to 10s.
	DialTimeout time.Duration
	// KeepAlive is how often an open connection is probed with a
	// keepalive@openssh.com request; a probe that fails or is not answered
	// within KeepAlive closes the connection. Defaults to 15s.
	KeepAlive time.Duration
	// IdleTimeout closes a connection no job has used for that long.
	// Defaults to 5m.
	IdleTimeout time.Duration
	// MaxSessionsPerHost bounds the sessions open at once to one host:port,
	// over all its connections. Keep it at or below the server's MaxSessions
	// (OpenSSH: 10); when the server refuses a session anyway, Run waits for
	// one of its own on that connection to end. Defaults to 8.
	MaxSessionsPerHost int
	// KillGrace is how long a process tree has between SIGTERM and SIGKILL
	// at a timeout or cancellation. Defaults to 5s.
	KillGrace time.Duration
	// WaitDelay is how long Run waits, once the script has exited, for its
	// output to end: a process it left in the background may hold it open.
	// Defaults to 2s.
	WaitDelay time.Duration
	// TempDir is the directory on the target under which each run gets its
	// private directory. Empty means the login's $TMPDIR, else /tmp.
	TempDir string
	// InheritEnv names the variables of the login environment the script
	// keeps. Nil means [DefaultInheritEnv]; an empty non-nil slice keeps
	// nothing. Names must be shell variable names.
	InheritEnv []string
	// Env holds extra KEY=VALUE variables for every script. They are part of
	// the remote command line: never put a secret there.
	Env []string
	// Interpreters runs scripts that have neither a Command nor a shebang,
	// looked up in the target's PATH. Defaults to /bin/sh and python3.
	Interpreters executor.Interpreters
	// Dial opens the TCP connection to a target (a proxy or jump host can
	// hook in here). Defaults to a net.Dialer.
	Dial func(ctx context.Context, network, address string) (net.Conn, error)
}

// DefaultInheritEnv returns the names of the variables of the login
// environment a script keeps by default.
func DefaultInheritEnv() []string {
	return []string{"PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LC_ALL", "TZ"}
}

// housekeepingTimeout bounds each of the short commands around a script:
// preparing and removing its run directory, killing its process tree (on
// top of KillGrace).
const housekeepingTimeout = 30 * time.Second

// housekeepingOutput is how much output of such a command is kept.
const housekeepingOutput = 64 << 10

// SSH runs scripts on remote machines over SSH, reusing one connection per
// target and login.
type SSH struct {
	opts   Options
	optErr error // a bad option, returned by every Run
	pool   *pool
}

var _ executor.Executor = (*SSH)(nil)

// New returns an SSH executor with opts' zero fields set to their defaults.
// Close it to close its connections.
func New(opts Options) *SSH {
	opts.DialTimeout = cmp.Or(opts.DialTimeout, 10*time.Second)
	opts.KeepAlive = cmp.Or(opts.KeepAlive, 15*time.Second)
	opts.IdleTimeout = cmp.Or(opts.IdleTimeout, 5*time.Minute)
	opts.MaxSessionsPerHost = cmp.Or(opts.MaxSessionsPerHost, 8)
	opts.KillGrace = cmp.Or(opts.KillGrace, 5*time.Second)
	opts.WaitDelay = cmp.Or(opts.WaitDelay, 2*time.Second)
	if opts.InheritEnv == nil {
		opts.InheritEnv = DefaultInheritEnv()
	}
	opts.InheritEnv = append([]string(nil), opts.InheritEnv...)
	opts.Env = append([]string(nil), opts.Env...)
	if opts.Dial == nil {
		var d net.Dialer
		opts.Dial = d.DialContext
	}
	s := &SSH{opts: opts}
	for _, name := range opts.InheritEnv {
		if !envName.MatchString(name) {
			s.optErr = fmt.Errorf("option InheritEnv: %q is not a variable name", name)
		}
	}
	for _, kv := range opts.Env {
		if name, _, ok := strings.Cut(kv, "="); !ok || !envName.MatchString(name) {
			s.optErr = fmt.Errorf("option Env: want NAME=VALUE with a variable name, got %q", kv)
		}
	}
	s.pool = newPool(opts.KeepAlive, opts.IdleTimeout, max(opts.MaxSessionsPerHost, 1))
	return s
}

// Close closes every connection; runs in progress fail. Safe to call twice.
func (s *SSH) Close() error {
	s.pool.close()
	return nil
}

// Run runs the job's script on job.Target in a fresh private directory. A
// non-zero exit and a timeout are Results; Run returns an error when the
// script could not be started (unreachable host, refused host key or login,
// ...: the error names the address), or when ctx is cancelled (after
// killing the remote process tree; the error wraps ctx.Err()).
func (s *SSH) Run(ctx context.Context, job executor.Job) (executor.Result, error) {
	t := job.Target
	where := "no target"
	if t != nil {
		where = net.JoinHostPort(t.Host, strconv.Itoa(cmp.Or(t.Port, 22)))
	}
	run := executor.NewScriptRun(job, where)
	switch {
	case t == nil:
		return run.NotStarted("no target", ErrNoTarget)
	case s.optErr != nil:
		return run.NotStarted("options", s.optErr)
	}
	if err := ctx.Err(); err != nil {
		return run.NotStarted("canceled before start", err)
	}
	// Check the interpreter before touching the target.
	if _, err := executor.Argv(job.Script, "/"+run.Name(), s.opts.Interpreters); err != nil {
		return run.NotStarted("choose interpreter", err)
	}

	r := &remote{s: s, target: t, addr: where, key: poolKey(t, where)}
	defer r.release()
	if err := r.connect(ctx); err != nil {
		return run.NotStarted("connect", err)
	}
	dir, err := r.prepare(ctx, run.Name(), job.Script.Content)
	if err != nil {
		return run.NotStarted("prepare run directory", err)
	}
	defer r.cleanup(dir)
	run.SetSystem(r.conn.getSystem())
	scriptPath := dir + "/" + run.Name()
	argv, err := executor.Argv(job.Script, scriptPath, s.opts.Interpreters)
	if err != nil {
		return run.NotStarted("choose interpreter", err)
	}
	run.SetCommand(strings.Join(argv, " "))
	if executor.UsesBootstrap(job.Script) {
		if err := r.upload(ctx, executor.BootstrapPath(scriptPath), []byte(executor.PowerShellBootstrap)); err != nil {
			return run.NotStarted("write bootstrap", err)
		}
	}
	marker, err := newMarker()
	if err != nil {
		return run.NotStarted("marker", err)
	}
	env := append(append(append([]string(nil), s.opts.Env...), "TMPDIR="+dir), job.Env()...)
	command := runCommand(marker, dir, s.opts.InheritEnv, env, argv)

	p := &script{r: r, filter: newMarkerFilter(marker, run.Stderr)}
	run.Starting()
	p.sess, err = r.start(ctx, command, job.Stdin, run.Stdout, p.filter, openOpts{slot: true})
	if err != nil {
		return run.NotStarted("start "+argv[0], err)
	}
	p.conn = r.conn
	return run.Wait(ctx, p)
}

// script is the script's session, as [executor.ScriptRun] drives it.
type script struct {
	r      *remote
	sess   *session
	filter *markerFilter // the session's stderr
	conn   *conn         // the connection the script runs over
	// lost and killErr tell, once drained, that the session ended without
	// an exit status and the connection died, and how killing the tree
	// then went.
	lost    bool
	killErr error
}

var _ executor.Process = (*script)(nil)

func (p *script) Done() <-chan struct{} { return p.sess.exited }

func (p *script) Kill() error { return p.r.kill(p.sess, p.filter) }

// Drain waits WaitDelay at most for the output to end. When the session
// ended without saying how the script did, the connection most likely died
// under it and the script may still run: its tree is killed (over a new
// connection if need be).
func (p *script) Drain(killed bool) {
	if p.sess.finish(p.r.s.opts.WaitDelay) {
		p.filter.Flush()
	}
	if ex := p.sess.exitInfo(); !killed && ex.status < 0 && ex.signal == "" {
		p.lost = p.conn.waitDead(time.Second)
		p.killErr = p.r.kill(p.sess, p.filter)
	}
}

// Exit reads how the session says the script ended.
func (p *script) Exit(executor.Result) executor.Exit {
	ex := p.sess.exitInfo()
	switch {
	case ex.signal != "":
		return executor.Exit{Code: -1, Error: ex.describe()}
	case ex.status >= 0:
		return executor.Exit{Code: ex.status}
	case p.lost:
		return executor.Exit{Code: -1, Error: fmt.Sprintf("connection to %s lost while the script ran: %s", p.r.addr, executor.KillNote(p.killErr))}
	}
	return executor.Exit{Code: -1, Error: "session ended without an exit status: " + executor.KillNote(p.killErr)}
}

// remote is one job's use of a target: its connection (re-dialled once when
// found dead), and the commands around the script.
type remote struct {
	s        *SSH
	target   *executor.Target
	addr     string
	key      string
	conn     *conn
	redialed bool
}

// connect takes the pooled connection, dialling one if needed.
func (r *remote) connect(ctx context.Context) error {
	c, err := r.s.pool.get(ctx, r.key, r.addr, func(ctx context.Context) (*gossh.Client, error) {
		return r.s.dial(ctx, r.target, r.addr)
	})
	if err != nil {
		return err
	}
	r.conn = c
	return nil
}

// release gives the connection back to the pool.
func (r *remote) release() {
	if r.conn != nil {
		r.s.pool.put(r.conn)
		r.conn = nil
	}
}

// redial replaces a dead connection, once per job.
func (r *remote) redial(ctx context.Context, err error) bool {
	var lost *connLostError
	if r.redialed || !errors.As(err, &lost) || ctx.Err() != nil {
		return false
	}
	r.redialed = true
	r.s.pool.drop(r.conn)
	r.release()
	return r.connect(ctx) == nil
}

// start starts a command in a new session, re-dialling once a connection
// found dead.
func (r *remote) start(ctx context.Context, cmd string, stdin []byte, stdout, stderr io.Writer, o openOpts) (*session, error) {
	for {
		if r.conn == nil {
			return nil, errors.New("no connection")
		}
		sess, err := startSession(ctx, r.conn, cmd, stdin, stdout, stderr, o)
		if err != nil && r.redial(ctx, err) {
			continue
		}
		return sess, err
	}
}

// exec runs a short command to completion and returns its stdout; a
// command that does not exit 0 is an error. A command cut by a dead
// connection is run again once over a new one.
func (r *remote) exec(ctx context.Context, cmd string, stdin []byte, o openOpts) (string, error) {
	for {
		out, err := r.execOnce(ctx, cmd, stdin, o)
		if err != nil && r.redial(ctx, err) {
			continue
		}
		return out, err
	}
}

func (r *remote) execOnce(ctx context.Context, cmd string, stdin []byte, o openOpts) (string, error) {
	stdout := executor.NewOutput(housekeepingOutput)
	stderr := executor.NewOutput(housekeepingOutput)
	sess, err := r.start(ctx, cmd, stdin, stdout, stderr, o)
	if err != nil {
		return "", err
	}
	c := r.conn
	select {
	case <-sess.exited:
	case <-ctx.Done():
		sess.close()
		out, _ := stdout.Finish(nil) // what was printed so far
		return out, ctx.Err()
	}
	sess.finish(r.s.opts.WaitDelay)
	out, _ := stdout.Finish(nil)
	ex := sess.exitInfo()
	switch {
	case ex.status == 0 && ex.signal == "":
		return out, nil
	case ex.status < 0 && ex.signal == "" && c.isDead():
		return "", &connLostError{addr: r.addr, err: errors.New("no exit status")}
	}
	msg, _ := stderr.Finish(nil)
	if msg = strings.TrimSpace(msg); msg != "" {
		return out, fmt.Errorf("%s: %s", ex.describe(), msg)
	}
	return out, errors.New(ex.describe())
}

// prepare creates the run directory and uploads the script into it; it
// learns the target's system on a connection's first job.
func (r *remote) prepare(ctx context.Context, name string, content []byte) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, housekeepingTimeout)
	defer cancel()
	system := r.conn.getSystem()
	withSystem := system == ""
	out, err := r.exec(ctx, prepareCommand(r.s.opts.TempDir, name, withSystem), content, openOpts{slot: true})
	dir, sys, perr := parsePrepared(out, withSystem)
	if err != nil {
		if validRunDir(dir) {
			r.cleanup(dir) // created before the upload failed
		}
		return "", err
	}
	if perr != nil {
		if validRunDir(dir) {
			r.cleanup(dir)
		}
		return "", perr
	}
	if withSystem {
		system = sys
	}
	if r.conn.getSystem() == "" { // first job of the connection, or re-dialled
		r.conn.setSystem(system)
	}
	return dir, nil
}

// cleanup removes the run directory, whatever happened to the job.
func (r *remote) cleanup(dir string) {
	ctx, cancel := context.WithTimeout(context.Background(), housekeepingTimeout)
	defer cancel()
	_, _ = r.exec(ctx, cleanupCommand(dir), nil, openOpts{slot: true})
}

// upload writes content to path on the target.
func (r *remote) upload(ctx context.Context, path string, content []byte) error {
	ctx, cancel := context.WithTimeout(ctx, housekeepingTimeout)
	defer cancel()
	_, err := r.exec(ctx, uploadCommand(path), content, openOpts{slot: true})
	return err
}

// kill kills the process tree of the script's session: SIGTERM to its
// process group, KillGrace, SIGKILL. It runs on a session of its own, which
// takes no slot; when the server refuses one, on a connection of its own.
func (r *remote) kill(sess *session, filter *markerFilter) error {
	grace := r.s.opts.KillGrace
	pgid := filter.PGID()
	if pgid == 0 {
		// The marker is printed as the session starts: wait for it.
		t := time.NewTimer(grace)
		select {
		case <-filter.ready:
		case <-sess.exited:
		case <-t.C:
		}
		t.Stop()
		if pgid = filter.PGID(); pgid == 0 {
			select {
			case <-sess.exited:
				return nil
			default:
				return errors.New("the script's process group is unknown")
			}
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), grace+housekeepingTimeout)
	defer cancel()
	cmd := killCommand(pgid, grace)
	_, err := r.exec(ctx, cmd, nil, openOpts{noWait: true})
	var refused *gossh.OpenChannelError
	if errors.As(err, &refused) {
		err = r.s.execAlone(ctx, r.target, r.addr, cmd)
	}
	if err != nil {
		return err
	}
	// The leader has gone (or was killed): wait for the session to say so.
	t := time.NewTimer(r.s.opts.WaitDelay)
	defer t.Stop()
	select {
	case <-sess.exited:
	case <-t.C:
	}
	return nil
}
