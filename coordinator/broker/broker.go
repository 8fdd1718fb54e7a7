// Package broker runs the nats-server with JetStream that postrotate embeds
// by default, in-process, with its logs routed to zerolog.
//
// With Options.Users the server admits only those nkey users: the
// coordinator with every right, and each enrolled worker with the rights of
// its own host ([WorkerPermissions]). SetUsers changes the users of a
// running server (a configuration reload): a new worker is admitted at
// once, a revoked one is disconnected. [Config] renders the same users as a
// nats-server configuration block, for an external cluster.
package broker

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"
)

// Options configure the embedded server. A zero field means its default.
type Options struct {
	// StoreDir holds JetStream's files. Defaults to a fresh temporary
	// directory, removed by Shutdown.
	StoreDir string
	// Listen is the client address ("127.0.0.1:4222"; port 0 picks a free
	// port). Empty: no network listener, in-process connections only.
	Listen string
	// ServerName names the server. Defaults to "postrotate".
	ServerName string
	// Logger receives the server's logs (component=nats). Defaults to a
	// disabled logger.
	Logger *zerolog.Logger
	// ReadyTimeout bounds the start. Defaults to 10s.
	ReadyTimeout time.Duration
	// EncryptionKey, when set, encrypts JetStream's store at rest
	// (nats-server's store encryption, ChaCha20-Poly1305): streams, KV
	// buckets and their indexes are unreadable without it. A store written
	// with another key (or none) cannot be read with it.
	EncryptionKey string
	// Users, when set, are the only clients the server admits, each
	// authenticated by its nkey, with its permissions. Empty: no
	// authentication, every client has every right (development only).
	Users []User
}

// Broker is a running embedded nats-server.
type Broker struct {
	srv     *server.Server
	tempDir string

	// base is the configuration the server started with, without users;
	// SetUsers reloads it with other users.
	base *server.Options
	auth bool       // started with users: SetUsers may change them
	mu   sync.Mutex // serializes SetUsers and Heal

	// writeErr is the last store write failure the server logged since
	// it started or was healed (Failing).
	writeErr atomic.Pointer[WriteError]
}

// Start starts the server and waits until it accepts connections.
func Start(opts Options) (*Broker, error) {
	b := &Broker{}
	dir := opts.StoreDir
	if dir == "" {
		d, err := os.MkdirTemp("", "postrotate-jetstream-")
		if err != nil {
			return nil, fmt.Errorf("create jetstream store: %w", err)
		}
		dir, b.tempDir = d, d
	}
	sopts := &server.Options{
		ServerName: opts.ServerName,
		JetStream:  true,
		StoreDir:   dir,
		NoSigs:     true,
		NoLog:      false,
		// Limits the size of one message: a task carries its script.
		MaxPayload: 8 << 20,
	}
	if err := validUsers(opts.Users); err != nil {
		b.cleanup()
		return nil, err
	}
	if opts.EncryptionKey != "" {
		sopts.JetStreamKey, sopts.JetStreamCipher = opts.EncryptionKey, server.ChaCha
	}
	if sopts.ServerName == "" {
		sopts.ServerName = "postrotate"
	}
	if opts.Listen == "" {
		sopts.DontListen = true
	} else {
		host, port, err := net.SplitHostPort(opts.Listen)
		if err != nil {
			b.cleanup()
			return nil, fmt.Errorf("nats listen address %q: %w", opts.Listen, err)
		}
		p, err := strconv.Atoi(port)
		if err != nil {
			b.cleanup()
			return nil, fmt.Errorf("nats listen address %q: bad port: %w", opts.Listen, err)
		}
		if p == 0 {
			p = server.RANDOM_PORT
		}
		sopts.Host, sopts.Port = host, p
	}
	b.base, b.auth = sopts.Clone(), len(opts.Users) > 0
	sopts.Nkeys = nkeyUsers(opts.Users)
	srv, err := server.NewServer(sopts)
	if err != nil {
		b.cleanup()
		return nil, fmt.Errorf("configure nats-server: %w", err)
	}
	log := zerolog.Nop()
	if opts.Logger != nil {
		log = opts.Logger.With().Str("component", "nats").Logger()
	}
	// Never trace: nats-server's trace logs every message payload, and a
	// task carries the script's stdin.
	srv.SetLoggerV2(serverLogger{log: log, b: b}, log.GetLevel() <= zerolog.DebugLevel, false, false)
	go srv.Start()
	timeout := opts.ReadyTimeout
	if timeout == 0 {
		timeout = 10 * time.Second
	}
	if !srv.ReadyForConnections(timeout) {
		srv.Shutdown()
		srv.WaitForShutdown()
		b.cleanup()
		return nil, errors.New("embedded nats-server not ready within " + timeout.String())
	}
	b.srv = srv
	return b, nil
}

// Connect opens an in-process client connection. When the server has
// users, opts must authenticate as one (nats.Nkey; see UserOption).
func (b *Broker) Connect(opts ...nats.Option) (*nats.Conn, error) {
	opts = append([]nats.Option{nats.InProcessServer(b.srv), nats.Name("postrotate-coordinator")}, opts...)
	nc, err := nats.Connect("", opts...)
	if err != nil {
		return nil, fmt.Errorf("connect to embedded nats-server: %w", err)
	}
	return nc, nil
}

// ClientURL is the URL remote clients use; empty without a listener.
func (b *Broker) ClientURL() string {
	if b.srv.Addr() == nil {
		return ""
	}
	return b.srv.ClientURL()
}

// Shutdown stops the server and removes a temporary store.
func (b *Broker) Shutdown() {
	if b.srv != nil {
		b.srv.Shutdown()
		b.srv.WaitForShutdown()
	}
	b.cleanup()
}

func (b *Broker) cleanup() {
	if b.tempDir != "" {
		_ = os.RemoveAll(b.tempDir)
		b.tempDir = ""
	}
}

// serverLogger adapts zerolog to nats-server's Logger. Fatalf logs at error
// level and never exits the process. It tells the broker of the store's
// write errors (Failing).
type serverLogger struct {
	log zerolog.Logger
	b   *Broker
}

func (l serverLogger) Noticef(format string, v ...any) { l.log.Info().Msgf(format, v...) }
func (l serverLogger) Warnf(format string, v ...any)   { l.log.Warn().Msgf(format, v...) }
func (l serverLogger) Fatalf(format string, v ...any) {
	l.log.Error().Bool("fatal", true).Msgf(format, v...)
}
func (l serverLogger) Errorf(format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	l.log.Error().Msg(msg)
	if isWriteError(msg) {
		l.b.writeErr.Store(&WriteError{Message: msg, At: time.Now()})
	}
}
func (l serverLogger) Debugf(format string, v ...any) { l.log.Debug().Msgf(format, v...) }
func (l serverLogger) Tracef(format string, v ...any) { l.log.Trace().Msgf(format, v...) }
