package rotate

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/postrotate/postrotate/executor"
)

// Defaults of a PostgreSQL rotation.
const (
	defaultPostgreSQLPort = 5432
	defaultDatabase       = "postgres"
	defaultSSLMode        = "prefer"
)

// sslModes are libpq's sslmode values.
var sslModes = []string{"disable", "allow", "prefer", "require", "verify-ca", "verify-full"}

// closeTimeout bounds saying goodbye to the server.
const closeTimeout = 5 * time.Second

// runPostgreSQL sets the role's password with ALTER ROLE ... PASSWORD and a
// SCRAM-SHA-256 verifier computed here.
func (r *Rotator) runPostgreSQL(ctx context.Context, job executor.Job) (executor.Result, error) {
	rot, t := job.Rotation, job.Target
	res := executor.Result{System: executor.System(runtime.GOOS), ExitCode: -1, StartedAt: time.Now()}
	if t == nil {
		return notStarted(job, res, fmt.Errorf("rotate postgresql password of %s: %w", rot.Login, ErrNoTarget))
	}
	where := net.JoinHostPort(t.Host, strconv.Itoa(cmp.Or(t.Port, defaultPostgreSQLPort)))
	if err := checkRoleName("rotation.login", rot.Login); err != nil {
		return notStarted(job, res, fmt.Errorf("rotate postgresql password on %s: %w", where, err))
	}
	role := pgx.Identifier{rot.Login}.Sanitize()
	res.Command = "ALTER ROLE " + role
	c := pgChange{login: rot.Login, where: where, prefix: fmt.Sprintf("rotate postgresql password of %s on %s", rot.Login, where)}
	if err := checkPGPassword(rot.NewPassword); err != nil {
		return notStarted(job, res, fmt.Errorf("%s: %w", c.prefix, err))
	}
	verifier, err := scramVerifier(rot.NewPassword, r.opts.SCRAMIterations)
	if err != nil {
		return notStarted(job, res, fmt.Errorf("%s: scram verifier: %w", c.prefix, err))
	}
	// The verifier is no password, but it allows an offline guessing
	// attack on it: it is masked too.
	job.Secrets = append(append([]string(nil), job.Secrets...), verifier)
	cfg, err := r.pgConfig(t, rot)
	if err != nil {
		return notStarted(job, res, fmt.Errorf("%s: %w", c.prefix, err))
	}
	// The verifier has only base64 characters, '$' and ':': safe between
	// quotes. ALTER ROLE takes no parameters.
	c.job, c.stmt = job, "ALTER ROLE "+role+" PASSWORD '"+verifier+"'"
	return c.apply(ctx, cfg, res)
}

// pgChange is the ALTER ROLE of a PostgreSQL rotation.
type pgChange struct {
	job          executor.Job // with the verifier in its Secrets
	login, where string
	prefix       string // what errors begin with
	stmt         string // ALTER ROLE ... PASSWORD '<verifier>'
}

// apply connects with cfg and runs the statement, within the job's
// timeout; the server's notices go to stderr.
func (c pgChange) apply(ctx context.Context, cfg *pgconn.Config, res executor.Result) (executor.Result, error) {
	mask := c.job.Masker()
	stderr := executor.NewOutput(c.job.EffectiveOutputLimit())
	var noticeMu sync.Mutex
	cfg.OnNotice = func(_ *pgconn.PgConn, n *pgconn.Notice) {
		noticeMu.Lock()
		defer noticeMu.Unlock()
		fmt.Fprintf(stderr, "%s: %s\n", n.Severity, n.Message)
	}
	finishOutput := func() {
		noticeMu.Lock()
		defer noticeMu.Unlock()
		res.Stderr, res.StderrTruncated = stderr.Finish(mask)
	}

	runCtx, cancel := context.WithTimeout(ctx, c.job.EffectiveTimeout())
	defer cancel()
	conn, err := pgconn.ConnectConfig(runCtx, cfg)
	if err != nil {
		finishOutput()
		if ctx.Err() != nil {
			return notStarted(c.job, res, fmt.Errorf("%s: connect: %w", c.prefix, ctx.Err()))
		}
		return notStarted(c.job, res, fmt.Errorf("%s: connect: %w", c.prefix, err))
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
		defer cancel()
		_ = conn.Close(cctx)
	}()
	if err := checkServerVersion(conn.ParameterStatus("server_version")); err != nil {
		finishOutput()
		return notStarted(c.job, res, fmt.Errorf("%s: %w", c.prefix, err))
	}

	_, err = conn.Exec(runCtx, c.stmt).ReadAll()
	res.FinishedAt = time.Now()
	finishOutput()
	return c.result(ctx, runCtx, err, res, mask)
}

// result completes res with how the statement went: err is its error,
// ctx the run's context and runCtx the same within the job's timeout.
func (c pgChange) result(ctx, runCtx context.Context, err error, res executor.Result, mask *executor.Masker) (executor.Result, error) {
	var pgErr *pgconn.PgError
	switch {
	case err == nil:
		res.ExitCode = 0
		res.Stdout = mask.Mask(fmt.Sprintf("password of %s changed on %s (postgresql)", c.login, c.where))
		return res, nil
	case ctx.Err() != nil:
		res.Error = mask.Mask(fmt.Sprintf("%s: canceled (%v): the change may or may not have been applied", c.prefix, ctx.Err()))
		return res, mask.MaskError(fmt.Errorf("%s: %w", c.prefix, ctx.Err()))
	case runCtx.Err() != nil:
		res.TimedOut = true
		res.Error = mask.Mask(fmt.Sprintf("%s: timed out after %s: the change may or may not have been applied", c.prefix, c.job.EffectiveTimeout()))
	case errors.As(err, &pgErr):
		res.ExitCode = 1
		res.Error = mask.Mask(fmt.Sprintf("%s: %s", c.prefix, pgErr.Error()))
	default:
		res.Error = mask.Mask(fmt.Sprintf("%s: %v: the change may or may not have been applied", c.prefix, err))
	}
	return res, nil
}

// checkPGPassword checks a new password for a PostgreSQL role.
func checkPGPassword(password string) error {
	const path = "rotation.new_password"
	switch {
	case password == "":
		return fmt.Errorf("%s: empty: %w", path, ErrInvalidPassword)
	case strings.ContainsRune(password, 0):
		return fmt.Errorf("%s: holds a NUL, which no PostgreSQL client can send: %w", path, ErrInvalidPassword)
	}
	return checkSASLprep(path, password)
}

// pgConfig returns the connection configuration for the target: its host,
// port and login, the rotation's database and sslmode, the target's CA
// certificate as the roots.
func (r *Rotator) pgConfig(t *executor.Target, rot *executor.Rotation) (*pgconn.Config, error) {
	if err := checkPGTarget(t, rot); err != nil {
		return nil, err
	}
	sslmode, roots, err := pgTLS(t, rot)
	if err != nil {
		return nil, err
	}
	port := cmp.Or(t.Port, defaultPostgreSQLPort)
	// Only the host, port and sslmode go through the connection string,
	// which decides the TLS configuration from them; the rest is set on
	// the parsed configuration, the password last, so that no password
	// file is looked up for it.
	connString := fmt.Sprintf("host=%s port=%d sslmode=%s", t.Host, port, sslmode)
	cfg, err := pgconn.ParseConfigWithOptions(connString, pgconn.ParseConfigOptions{
		ConnStringAllowedKeys: []string{"host", "port", "sslmode"},
	})
	if err != nil {
		return nil, fmt.Errorf("connection settings: %w", err)
	}
	cfg.User = t.Login
	cfg.Password = t.Password
	cfg.Database = cmp.Or(rot.Database, defaultDatabase)
	cfg.ConnectTimeout = r.opts.ConnectTimeout
	cfg.RuntimeParams["application_name"] = "postrotate"
	if roots != nil {
		setRoots(cfg.TLSConfig, roots)
		for _, fb := range cfg.Fallbacks {
			setRoots(fb.TLSConfig, roots)
		}
	}
	return cfg, nil
}

// checkPGTarget checks the target's host, port and login and the
// rotation's database.
func checkPGTarget(t *executor.Target, rot *executor.Rotation) error {
	switch {
	case t.Host == "" || strings.ContainsAny(t.Host, ",/\\'\"= \t\r\n\x00"):
		return fmt.Errorf("target.host: %q is not a host name or address: %w", t.Host, ErrInvalidTarget)
	case t.Port < 0 || t.Port > 65535:
		return fmt.Errorf("target.port: %d is out of range: %w", t.Port, ErrInvalidTarget)
	case t.Login == "" || strings.ContainsRune(t.Login, 0):
		return fmt.Errorf("target.login: %q is not a role name: %w", t.Login, ErrInvalidTarget)
	case strings.ContainsRune(rot.Database, 0):
		return fmt.Errorf("rotation.database: %q holds a NUL: %w", rot.Database, ErrInvalidTarget)
	}
	return nil
}

// pgTLS returns the sslmode of the rotation and the roots of the target's
// CA certificate (nil without one): with roots, "require" becomes
// "verify-ca", as libpq does.
func pgTLS(t *executor.Target, rot *executor.Rotation) (string, *x509.CertPool, error) {
	sslmode := cmp.Or(rot.SSLMode, defaultSSLMode)
	if !slices.Contains(sslModes, sslmode) {
		return "", nil, fmt.Errorf("rotation.sslmode: %q (want one of %s): %w", sslmode, strings.Join(sslModes, ", "), ErrInvalidTarget)
	}
	if t.CACert == "" {
		return sslmode, nil, nil
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM([]byte(t.CACert)) {
		return "", nil, fmt.Errorf("target.ca_cert: no PEM certificate in it: %w", ErrInvalidTarget)
	}
	if sslmode == "require" {
		sslmode = "verify-ca" // as libpq does with a root certificate
	}
	return sslmode, roots, nil
}

// setRoots makes roots the CA certificates a TLS configuration trusts (it
// verifies with them for verify-ca and verify-full).
func setRoots(c *tls.Config, roots *x509.CertPool) {
	if c != nil {
		c.RootCAs = roots
	}
}

// checkServerVersion refuses servers older than PostgreSQL 10: they would
// take the verifier for a plaintext password.
func checkServerVersion(version string) error {
	v := strings.TrimSpace(version)
	end := strings.IndexFunc(v, func(r rune) bool { return r < '0' || r > '9' })
	if end < 0 {
		end = len(v)
	}
	n, err := strconv.Atoi(v[:end]) // "15.4 (Debian 15.4-1)", "17beta1"
	switch {
	case err != nil:
		return fmt.Errorf("server version %q: not understood: %w", version, ErrUnsupported)
	case n < 10:
		return fmt.Errorf("server version %s: SCRAM-SHA-256 needs PostgreSQL 10 or later: %w", version, ErrUnsupported)
	}
	return nil
}
