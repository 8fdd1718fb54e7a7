// Command postrotate-worker is postrotate's agent for gateways and machines:
// it pulls its host's tasks from NATS JetStream and runs them.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"github.com/spf13/cobra"

	"github.com/postrotate/postrotate/messages"
	"github.com/postrotate/postrotate/worker"
)

// Version is set at build time.
var Version = "dev"

type config struct {
	host, name, url, prefix, logLevel string
	stopGrace, heartbeat              time.Duration
}

func main() {
	var cfg config
	root := &cobra.Command{
		Use:   "postrotate-worker --host ID --nats URL",
		Short: "Run the post-rotation scripts of one host",
		Long: `postrotate-worker binds to the task consumer of its host (created by the
coordinator) and runs the host's tasks one at a time, in order. It registers
in the workers KV bucket and refreshes its entry every --heartbeat.

SIGTERM or SIGINT: stop pulling, let the running script finish and report,
then exit; a second signal, or --stop-grace passing, kills the running
script's process tree.`,
		Version:       Version,
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return run(cmd.Context(), cfg)
		},
	}
	f := root.Flags()
	f.StringVar(&cfg.host, "host", "", "host id whose tasks this worker runs (required)")
	f.StringVar(&cfg.url, "nats", nats.DefaultURL, "NATS server URL(s), comma separated")
	f.StringVar(&cfg.name, "name", "", "name of this worker instance (default <hostname>-<pid>)")
	f.StringVar(&cfg.prefix, "prefix", messages.DefaultPrefix, "subject prefix")
	f.StringVar(&cfg.logLevel, "log-level", "info", "log level: trace, debug, info, warn, error")
	f.DurationVar(&cfg.stopGrace, "stop-grace", 10*time.Minute, "how long a stop waits for the running script")
	f.DurationVar(&cfg.heartbeat, "heartbeat", 5*time.Second, "how often the worker refreshes its registration (keep it under the workers bucket's TTL, 30s by default)")
	_ = root.MarkFlagRequired("host")

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := root.ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "postrotate-worker:", err)
		os.Exit(2)
	}
}

func run(ctx context.Context, cfg config) error {
	lvl, err := zerolog.ParseLevel(cfg.logLevel)
	if err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	log := zerolog.New(os.Stderr).Level(lvl).With().Timestamp().Logger()
	nc, err := nats.Connect(cfg.url,
		nats.Name("postrotate-worker "+cfg.host),
		nats.MaxReconnects(-1),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			log.Error().Err(err).Msg("nats async error")
		}),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) { log.Warn().Err(err).Msg("nats disconnected") }),
		nats.ReconnectHandler(func(nc *nats.Conn) { log.Info().Str("url", nc.ConnectedUrlRedacted()).Msg("nats reconnected") }),
	)
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
		HeartbeatEvery: cfg.heartbeat,
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
		case <-time.After(backoff):
		}
	}
	<-ctx.Done()
	log.Info().Msg("stopping: finishing the running script")
	// A second signal cuts the grace short.
	stopCtx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	stopCtx, cancelGrace := context.WithTimeout(stopCtx, cfg.stopGrace)
	defer cancelGrace()
	if err := w.Stop(stopCtx); err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("stop: %w", err)
	}
	return nil
}
