// Command postrotate-worker is postrotate's agent for gateways and machines:
// it pulls its host's tasks from NATS JetStream and runs them.
package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"github.com/spf13/cobra"

	"github.com/postrotate/postrotate/messages"
	"github.com/postrotate/postrotate/messages/envelope"
	"github.com/postrotate/postrotate/worker"
	"github.com/postrotate/postrotate/worker/natsconn"
)

// Version is set at build time.
var Version = "dev"

type config struct {
	host, name, url, prefix, logLevel, creds string
	stopGrace, heartbeat, authGiveUp         time.Duration
	// urlSet and prefixSet say whether --nats and --prefix were given.
	urlSet, prefixSet bool
}

func main() {
	var cfg config
	root := &cobra.Command{
		Use:   "postrotate-worker --creds FILE | --host ID --nats URL",
		Short: "Run the post-rotation scripts of one host",
		Long: `postrotate-worker binds to the task consumer of its host (created by the
coordinator) and runs the host's tasks one at a time, in order. It registers
in the workers KV bucket and refreshes its entry every --heartbeat.

--creds FILE is the credentials file 'postrotate worker add HOST' wrote
(mode 0600): the worker connects as its host's NATS user, which may run that
host's tasks only, and runs only the tasks the coordinator signed for it,
with secrets sealed for it. The file names the host and the NATS URL
(--nats overrides it). Without --creds (development, with
'serve --insecure-workers'), tasks are not verified.

SIGTERM or SIGINT: stop pulling, let the running script finish and report,
then exit; a second signal, or --stop-grace passing, kills the running
script's process tree.`,
		Version:       Version,
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg.urlSet, cfg.prefixSet = cmd.Flags().Changed("nats"), cmd.Flags().Changed("prefix")
			return run(cmd.Context(), cfg, os.Stderr)
		},
	}
	f := root.Flags()
	f.StringVar(&cfg.creds, "creds", "", "credentials file from 'postrotate worker add' (mode 0600)")
	f.StringVar(&cfg.host, "host", "", "host id whose tasks this worker runs (required without --creds; with it, must match)")
	f.StringVar(&cfg.url, "nats", nats.DefaultURL, "NATS server URL(s), comma separated")
	f.StringVar(&cfg.name, "name", "", "name of this worker instance (default <hostname>-<pid>)")
	f.StringVar(&cfg.prefix, "prefix", messages.DefaultPrefix, "subject prefix")
	f.StringVar(&cfg.logLevel, "log-level", "info", "log level: trace, debug, info, warn, error")
	f.DurationVar(&cfg.stopGrace, "stop-grace", 10*time.Minute, "how long a stop waits for the running script")
	f.DurationVar(&cfg.authGiveUp, "auth-give-up", 2*time.Minute, "exit when NATS refuses the credentials for this long (revoked or replaced)")
	f.DurationVar(&cfg.heartbeat, "heartbeat", 5*time.Second, "how often the worker refreshes its registration (keep it under the workers bucket's TTL, 30s by default)")

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := root.ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "postrotate-worker:", err)
		os.Exit(2)
	}
}

// run runs the worker until ctx ends (a signal) or its NATS connection is
// closed for good; it logs to logs.
func run(ctx context.Context, cfg config, logs io.Writer) error {
	lvl, err := zerolog.ParseLevel(cfg.logLevel)
	if err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	log := zerolog.New(logs).Level(lvl).With().Timestamp().Logger()
	creds, err := credentials(&cfg)
	if err != nil {
		return err
	}
	var trust *envelope.Trust
	if creds != nil {
		if trust, err = creds.Trust(); err != nil {
			return fmt.Errorf("--creds %s: %w", cfg.creds, err)
		}
	} else {
		log.Warn().Msg("no --creds: tasks are not verified (unsigned tasks with their secrets in clear are run); for development only")
	}
	opts, err := natsconn.Options(natsconn.Config{Host: cfg.host, Creds: creds, Logger: &log, AuthGiveUp: cfg.authGiveUp})
	if err != nil {
		return fmt.Errorf("--creds %s: %w", cfg.creds, err)
	}
	// A connection the server closes for good (credentials revoked or
	// replaced) ends the worker, so that its supervisor sees it.
	closed := make(chan struct{})
	onClosed := nats.ClosedHandler(func(*nats.Conn) { close(closed) })
	nc, err := nats.Connect(cfg.url, append(opts, onClosed)...)
	if errors.Is(err, nats.ErrNkeysNotSupported) && creds != nil {
		// As serve does with such a server: the tasks are still verified
		// and their secrets opened with the credentials' keys.
		log.Warn().Str("url", cfg.url).Msg("the NATS server does not authenticate clients: connecting without the credentials' NATS user, so NATS does not restrict this worker to its host (configure its users: postrotate worker add --nats-config)")
		if opts, err = natsconn.Options(natsconn.Config{Host: cfg.host, Logger: &log, AuthGiveUp: cfg.authGiveUp}); err != nil {
			return err
		}
		nc, err = nats.Connect(cfg.url, append(opts, onClosed, nats.CustomInboxPrefix(creds.InboxPrefix))...)
	}
	if errors.Is(err, nats.ErrAuthorization) && creds != nil {
		return fmt.Errorf("connect to %s: %w: the server does not accept the credentials of %s (revoked or replaced? enroll again with 'postrotate worker add %s')", cfg.url, err, cfg.creds, cfg.host)
	}
	if err != nil {
		return fmt.Errorf("connect to %s: %w", cfg.url, err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	w, err := worker.New(js, worker.Options{
		Host: cfg.host, Name: cfg.name, Version: Version, Subjects: messages.Subjects{Prefix: cfg.prefix}, Logger: &log,
		HeartbeatEvery: cfg.heartbeat, Trust: trust,
	})
	if err != nil {
		return err
	}
	// The coordinator creates the host's consumer: wait for it.
	for backoff := time.Second; ; backoff = min(2*backoff, 30*time.Second) {
		err := w.Start(ctx)
		if err == nil {
			break
		}
		if !errors.Is(err, jetstream.ErrConsumerNotFound) && !errors.Is(err, jetstream.ErrStreamNotFound) {
			return err
		}
		log.Warn().Err(err).Dur("retry_in", backoff).Msg("no task consumer for this host yet; is the coordinator running and does its inventory name this host?")
		select {
		case <-ctx.Done():
			return nil
		case <-closed:
			return connectionLost(nc)
		case <-time.After(backoff):
		}
	}
	var lost error
	select {
	case <-ctx.Done():
		log.Info().Msg("stopping: finishing the running script")
	case <-closed:
		lost = connectionLost(nc)
		log.Error().Err(lost).Msg("stopping")
	}
	// A second signal cuts the grace short.
	stopCtx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	stopCtx, cancelGrace := context.WithTimeout(stopCtx, cfg.stopGrace)
	defer cancelGrace()
	if err := w.Stop(stopCtx); err != nil && !errors.Is(err, context.Canceled) {
		return errors.Join(lost, fmt.Errorf("stop: %w", err))
	}
	return lost
}

// Errors of credentials and run.
var (
	errNoHost         = errors.New("give --creds FILE (from 'postrotate worker add HOST'), or --host ID for development")
	errHostMismatch   = errors.New("--host disagrees with the host of --creds")
	errPrefixMismatch = errors.New("--prefix disagrees with the prefix of --creds: its NATS user has the rights of that prefix only")
	errConnectionLost = errors.New("the nats connection was closed for good")
)

// credentials reads --creds, if given, and settles the host, the NATS URL
// and the prefix with the flags: the file's host is the host (a --host that
// disagrees is an error), its URL and prefix apply unless --nats or
// --prefix are given. Without --creds, --host is required.
func credentials(cfg *config) (*envelope.Credentials, error) {
	if cfg.creds == "" {
		if cfg.host == "" {
			return nil, errNoHost
		}
		return nil, nil
	}
	c, err := envelope.ReadCredentials(cfg.creds)
	if err != nil {
		return nil, err
	}
	if cfg.host != "" && cfg.host != c.Host {
		return nil, fmt.Errorf("%w: %q is not %s's %q", errHostMismatch, cfg.host, cfg.creds, c.Host)
	}
	cfg.host = c.Host
	if !cfg.urlSet && c.NATS != "" {
		cfg.url = c.NATS
	}
	if !cfg.prefixSet && c.Prefix != "" {
		cfg.prefix = c.Prefix
	}
	if p := cmp.Or(c.Prefix, messages.DefaultPrefix); cfg.prefix != p {
		return nil, fmt.Errorf("%w: %q is not %s's %q", errPrefixMismatch, cfg.prefix, cfg.creds, p)
	}
	return &c, nil
}

// connectionLost says why nc was closed.
func connectionLost(nc *nats.Conn) error {
	if err := nc.LastError(); err != nil {
		return fmt.Errorf("%w: %w", errConnectionLost, err)
	}
	return errConnectionLost
}
