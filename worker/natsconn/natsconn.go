// Package natsconn connects a worker to NATS: as its enrolled nkey user,
// with its own inbox prefix (the only subjects its user may subscribe to),
// and with an error handler that reports permission violations.
//
// A worker's NATS user may only do what the worker library does for its
// own host (see the coordinator's broker.WorkerPermissions). The server
// answers anything else with a permission violation, which arrives
// asynchronously: [ErrorHandler] logs it at level error as "nats permission
// violation", with the operation and the subject, so that a misconfigured
// or compromised worker is visible in its logs.
package natsconn

import (
	"cmp"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/postrotate/postrotate/messages/envelope"
)

// Config describes a worker's connection. A zero field means its default.
type Config struct {
	// Host is the worker's host, in the connection's name.
	Host string
	// Creds, when set, are the worker's credentials: the connection
	// authenticates as its nkey user and uses its inbox prefix.
	Creds *envelope.Credentials
	// Logger receives the connection's errors and (dis)connections.
	// Defaults to a disabled logger.
	Logger *zerolog.Logger
	// AuthGiveUp is how long the connection keeps reconnecting while the
	// server refuses its credentials before it is closed for good: a
	// restarting coordinator admits its workers a moment after it listens,
	// but revoked or replaced credentials are refused for ever. Defaults
	// to 2m.
	AuthGiveUp time.Duration
}

// Options returns the options of a worker's connection to NATS: its name,
// reconnection for ever (within AuthGiveUp while its credentials are
// refused), the error and (dis)connection handlers, and with Creds its nkey
// user and inbox prefix.
func Options(c Config) ([]nats.Option, error) {
	log := zerolog.Nop()
	if c.Logger != nil {
		log = *c.Logger
	}
	giveUp := cmp.Or(c.AuthGiveUp, 2*time.Minute)
	refused := &refusal{}
	handle := ErrorHandler(log)
	opts := []nats.Option{
		nats.Name("postrotate-worker " + c.Host),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(time.Second),
		nats.IgnoreAuthErrorAbort(),
		nats.ErrorHandler(func(nc *nats.Conn, sub *nats.Subscription, err error) {
			if !isAuthError(err) {
				handle(nc, sub, err)
				return
			}
			lasted := refused.add(time.Now())
			if lasted >= giveUp {
				log.Error().Err(err).Dur("refused_for", lasted).
					Msg("nats refuses the credentials for good (revoked or replaced?): closing the connection")
				go nc.Close()
				return
			}
			log.Error().Err(err).Dur("refused_for", lasted).Dur("give_up_after", giveUp).
				Msg("nats refuses the credentials; retrying (a restarting coordinator admits its workers once it has started)")
		}),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn().Err(err).Msg("nats disconnected")
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			refused.reset()
			log.Info().Str("url", nc.ConnectedUrlRedacted()).Msg("nats reconnected")
		}),
	}
	if c.Creds == nil {
		return opts, nil
	}
	kp, err := c.Creds.User()
	if err != nil {
		return nil, err
	}
	pub, err := kp.PublicKey()
	if err != nil {
		return nil, fmt.Errorf("nkey user: %w", err)
	}
	return append(opts,
		nats.Nkey(pub, kp.Sign),
		nats.CustomInboxPrefix(c.Creds.InboxPrefix),
	), nil
}

func isAuthError(err error) bool {
	return errors.Is(err, nats.ErrAuthorization) || errors.Is(err, nats.ErrAuthRevoked) || errors.Is(err, nats.ErrAuthExpired)
}

// refusal tracks since when the server refuses the credentials.
type refusal struct {
	mu    sync.Mutex
	since time.Time
}

// add notes a refusal at now and returns how long the refusals have
// lasted.
func (r *refusal) add(now time.Time) time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.since.IsZero() {
		r.since = now
	}
	return now.Sub(r.since)
}

func (r *refusal) reset() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.since = time.Time{}
}

// ErrorHandler logs the asynchronous errors of a connection. A permission
// violation is logged at level error as "nats permission violation" with
// its operation ("publish" or "subscribe") and subject; any other error as
// "nats async error".
func ErrorHandler(log zerolog.Logger) nats.ErrHandler {
	return func(_ *nats.Conn, sub *nats.Subscription, err error) {
		if v, ok := AsViolation(err); ok {
			log.Error().Str("operation", v.Operation).Str("subject", v.Subject).
				Msg("nats permission violation")
			return
		}
		ev := log.Error().Err(err)
		if sub != nil {
			ev = ev.Str("subject", sub.Subject)
		}
		ev.Msg("nats async error")
	}
}

// Violation is a permission violation the server reported.
type Violation struct {
	// Operation is "publish" or "subscribe".
	Operation string
	// Subject is the subject denied (for a publish with a reply subject,
	// the reply subject).
	Subject string
}

var violationRe = regexp.MustCompile(`(?i)violation for (publish|subscription) (?:to|with reply of) "([^"]*)"`)

// AsViolation reports whether err is a permission violation, and which.
func AsViolation(err error) (Violation, bool) {
	if err == nil || !errors.Is(err, nats.ErrPermissionViolation) {
		return Violation{}, false
	}
	v := Violation{Operation: "unknown"}
	if m := violationRe.FindStringSubmatch(err.Error()); m != nil {
		v.Operation, v.Subject = "publish", m[2]
		if strings.EqualFold(m[1], "subscription") {
			v.Operation = "subscribe"
		}
	}
	return v, true
}
