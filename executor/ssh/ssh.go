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
	begin := time.Now() // a script that cannot start reports the time spent trying
	mask := job.Masker()
	res := executor.Result{ExitCode: -1}
	name := executor.ScriptFileName(job.Script.Name)
	t := job.Target
	where := "no target"
	if t != nil {
		where = net.JoinHostPort(t.Host, strconv.Itoa(cmp.Or(t.Port, 22)))
	}
	notStarted := func(why string, err error) (executor.Result, error) {
		if res.StartedAt.IsZero() {
			res.StartedAt = begin
		}
		res.FinishedAt = time.Now()
		res.Error = mask.Mask(why + ": " + err.Error())
		return res, mask.MaskError(fmt.Errorf("run %s on %s: %s: %w", name, where, why, err))
	}
	switch {
	case t == nil:
		return notStarted("no target", ErrNoTarget)
	case s.optErr != nil:
		return notStarted("options", s.optErr)
	}
	if err := ctx.Err(); err != nil {
		return notStarted("canceled before start", err)
	}
	// Check the interpreter before touching the target.
	if _, err := executor.Argv(job.Script, "/"+name, s.opts.Interpreters); err != nil {
		return notStarted("choose interpreter", err)
	}

	r := &remote{s: s, target: t, addr: where, key: poolKey(t, where)}
	defer r.release()
	if err := r.connect(ctx); err != nil {
		return notStarted("connect", err)
	}
	dir, err := r.prepare(ctx, name, job.Script.Content)
	if err != nil {
		return notStarted("prepare run directory", err)
	}
	defer r.cleanup(dir)
	res.System = r.conn.getSystem()
	scriptPath := dir + "/" + name
	argv, err := executor.Argv(job.Script, scriptPath, s.opts.Interpreters)
	if err != nil {
		return notStarted("choose interpreter", err)
	}
	res.Command = mask.Mask(strings.Join(argv, " "))
	if executor.UsesBootstrap(job.Script) {
		bctx, cancel := context.WithTimeout(ctx, housekeepingTimeout)
		_, err := r.exec(bctx, uploadCommand(executor.BootstrapPath(scriptPath)), []byte(executor.PowerShellBootstrap), openOpts{slot: true})
		cancel()
		if err != nil {
			return notStarted("write bootstrap", err)
		}
	}
	marker, err := newMarker()
	if err != nil {
		return notStarted("marker", err)
	}
	env := append(append(append([]string(nil), s.opts.Env...), "TMPDIR="+dir), job.Env()...)
	command := runCommand(marker, dir, s.opts.InheritEnv, env, argv)

	stdout := executor.NewOutput(job.EffectiveOutputLimit())
	stderr := executor.NewOutput(job.EffectiveOutputLimit())
	filter := newMarkerFilter(marker, stderr)
	res.StartedAt = time.Now()
	sess, err := r.start(ctx, command, job.Stdin, stdout, filter, openOpts{slot: true})
	if err != nil {
		return notStarted("start "+argv[0], err)
	}
	runConn := r.conn

	timeout := job.EffectiveTimeout()
	timedOut, canceled := executor.Wait(ctx, sess.exited, timeout)
	var killErr error
	if timedOut || canceled {
		killErr = r.kill(sess, filter)
	}
	if sess.finish(s.opts.WaitDelay) {
		filter.Flush()
	}
	ex := sess.exitInfo()
	lost := false
	if !timedOut && !canceled && ex.status < 0 && ex.signal == "" {
		// The session ended without saying how the script did: most
		// likely the connection died under it, and the script may still
		// run. Kill its tree (over a new connection if need be).
		lost = runConn.waitDead(time.Second)
		killErr = r.kill(sess, filter)
	}
	res.FinishedAt = time.Now()
	res.Stdout, res.StdoutTruncated = stdout.Finish(mask)
	res.Stderr, res.StderrTruncated = stderr.Finish(mask)

	killed := executor.KillNote(killErr)
	switch {
	case canceled:
		res.Error = mask.Mask(fmt.Sprintf("canceled (%v): %s", ctx.Err(), killed))
		return res, mask.MaskError(fmt.Errorf("run %s on %s: %w", name, where, ctx.Err()))
	case timedOut:
		res.TimedOut = true
		res.Error = mask.Mask(fmt.Sprintf("timed out after %s: %s", timeout, killed))
	case ex.signal != "":
		res.Error = mask.Mask(ex.describe())
	case ex.status >= 0:
		res.ExitCode = ex.status
	case lost:
		res.Error = mask.Mask(fmt.Sprintf("connection to %s lost while the script ran: %s", where, killed))
	default:
		res.Error = mask.Mask("session ended without an exit status: " + killed)
	}
	return res, nil
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
