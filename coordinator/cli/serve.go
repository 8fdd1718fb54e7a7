package cli

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"github.com/spf13/cobra"

	"github.com/postrotate/postrotate/coordinator/broker"
	"github.com/postrotate/postrotate/coordinator/dispatch"
	"github.com/postrotate/postrotate/coordinator/inventory"
	"github.com/postrotate/postrotate/coordinator/server"
	"github.com/postrotate/postrotate/messages"
	"github.com/postrotate/postrotate/worker"
)

type serveConfig struct {
	inventory, data, httpAddr, natsListen, natsURL, prefix string
	localWorkers                                           bool
	pickupTimeout, ackWait, pinnedTTL                      time.Duration
}

func newServe(g *globals) *cobra.Command {
	var cfg serveConfig
	c := &cobra.Command{
		Use:   "serve --inventory FILE [--data DIR] [--http ADDR] [--nats-listen ADDR | --nats URL]",
		Short: "Run the coordinator as a service with an HTTP API",
		Long: `Run the coordinator as a long-lived service. By default it embeds a
nats-server with JetStream that listens on --nats-listen (workers connect
there) and stores its data under --data; with --nats it uses an external
NATS/JetStream and embeds nothing.

Rotations are started through the HTTP API (or 'postrotate rotate --server'),
run in parallel for different users, and are kept in JetStream: a
coordinator killed mid-rotation resumes it when it starts again.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := g.logger()
			if err != nil {
				return err
			}
			inv, err := loadInventory(cfg.inventory)
			if err != nil {
				return err
			}
			return serve(cmd.Context(), g, log, cfg, inv)
		},
	}
	f := c.Flags()
	f.StringVarP(&cfg.inventory, "inventory", "i", "", "inventory file (YAML or JSON)")
	f.StringVar(&cfg.data, "data", "postrotate-data", "directory of the embedded JetStream store")
	f.StringVar(&cfg.httpAddr, "http", "127.0.0.1:7480", "HTTP API address")
	f.StringVar(&cfg.natsListen, "nats-listen", "127.0.0.1:4222", "client address of the embedded nats-server")
	f.StringVar(&cfg.natsURL, "nats", "", "use this external NATS JetStream instead of the embedded server")
	f.StringVar(&cfg.prefix, "prefix", messages.DefaultPrefix, "subject prefix")
	f.BoolVar(&cfg.localWorkers, "local-workers", false, "also run an in-process worker for every host of the inventory (a single-machine setup)")
	f.DurationVar(&cfg.pickupTimeout, "pickup-timeout", time.Minute, "how long a step waits for its host's worker before it fails")
	f.DurationVar(&cfg.ackWait, "ack-wait", 30*time.Second, "how long a task may go without a sign of life from its worker before it is delivered again")
	f.DurationVar(&cfg.pinnedTTL, "pinned-ttl", 30*time.Second, "how long a host's pinned worker may go without pulling before another worker of the host takes over")
	_ = c.MarkFlagRequired("inventory")
	return c
}

func serve(ctx context.Context, g *globals, log zerolog.Logger, cfg serveConfig, inv *inventory.Inventory) error {
	var nc *nats.Conn
	natsOpts := []nats.Option{
		nats.Name("postrotate-coordinator"),
		nats.MaxReconnects(-1),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			log.Error().Err(err).Msg("nats async error")
		}),
	}
	if cfg.natsURL != "" {
		var err error
		if nc, err = nats.Connect(cfg.natsURL, natsOpts...); err != nil {
			return &exitError{ExitFailed, fmt.Errorf("connect to %s: %w", cfg.natsURL, err)}
		}
	} else {
		b, err := broker.Start(broker.Options{StoreDir: filepath.Join(cfg.data, "jetstream"), Listen: cfg.natsListen, Logger: &log})
		if err != nil {
			return &exitError{ExitFailed, err}
		}
		defer b.Shutdown()
		if nc, err = b.Connect(natsOpts...); err != nil {
			return &exitError{ExitFailed, err}
		}
		log.Info().Str("url", b.ClientURL()).Msg("embedded nats-server listening")
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return &exitError{ExitFailed, err}
	}
	subj := messages.Subjects{Prefix: cfg.prefix}
	srv, err := server.New(js, server.Options{
		Inventory: inv,
		Dispatch: dispatch.Options{
			Layout:        dispatch.Layout{Subjects: subj, AckWait: cfg.ackWait, PinnedTTL: cfg.pinnedTTL},
			PickupTimeout: cfg.pickupTimeout,
		},
		Logger: &log,
	})
	if err != nil {
		return &exitError{ExitFailed, err}
	}
	if err := srv.Start(ctx); err != nil {
		return &exitError{ExitFailed, fmt.Errorf("start: %w", err)}
	}
	if cfg.localWorkers {
		for _, h := range server.Hosts(inv) {
			w, err := worker.New(js, worker.Options{Host: h, Name: h + "-inprocess", Subjects: subj, Logger: &log})
			if err != nil {
				return &exitError{ExitFailed, err}
			}
			if err := w.Start(ctx); err != nil {
				return &exitError{ExitFailed, err}
			}
			defer func() {
				stopCtx, cancel := context.WithTimeout(context.Background(), time.Minute)
				defer cancel()
				_ = w.Stop(stopCtx)
			}()
		}
	}

	ln, err := net.Listen("tcp", cfg.httpAddr)
	if err != nil {
		return &exitError{ExitFailed, fmt.Errorf("http listen: %w", err)}
	}
	hs := &http.Server{Handler: srv.Handler(), ReadHeaderTimeout: 10 * time.Second}
	httpErr := make(chan error, 1)
	go func() { httpErr <- hs.Serve(ln) }()
	log.Info().Str("http", ln.Addr().String()).Msg("postrotate serving")
	fmt.Fprintf(g.stderr, "postrotate: serving HTTP on http://%s\n", ln.Addr())

	select {
	case <-ctx.Done():
	case err := <-httpErr:
		return &exitError{ExitFailed, fmt.Errorf("http: %w", err)}
	}
	log.Info().Msg("shutting down")
	shutCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := hs.Shutdown(shutCtx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Warn().Err(err).Msg("http shutdown")
	}
	if err := srv.Stop(shutCtx); err != nil {
		log.Warn().Err(err).Msg("stop rotations")
	}
	return nil
}
