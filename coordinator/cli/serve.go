package cli

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
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
	"github.com/postrotate/postrotate/coordinator/vault"
	"github.com/postrotate/postrotate/messages"
	"github.com/postrotate/postrotate/worker"
)

type serveConfig struct {
	inventory, data, httpAddr, natsListen, natsURL, prefix, keyFile string
	localWorkers, force, noSchedules                                bool
	pickupTimeout, ackWait, pinnedTTL                               time.Duration
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
or by the users' schedules, run in parallel for different users, and are
kept in JetStream: a coordinator killed mid-rotation resumes it when it
starts again.

The inventory is applied to the record store at start: records and scripts
are updated, but a password postrotate rotated since is kept (--force takes
the inventory's). The store, and with the embedded server all of JetStream's
data, is encrypted with the vault key: $POSTROTATE_VAULT_KEY, or the file
--key-file (created on first start: back it up).`,
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
	f.StringVar(&cfg.keyFile, "key-file", "", "vault key file (default: vault.key under --data); $"+vault.KeyEnv+" wins")
	f.BoolVar(&cfg.force, "force", false, "replace the passwords postrotate rotated with the inventory's")
	f.BoolVar(&cfg.noSchedules, "no-schedules", false, "do not fire scheduled rotations (only those asked for)")
	_ = c.MarkFlagRequired("inventory")
	return c
}

func serve(ctx context.Context, g *globals, log zerolog.Logger, cfg serveConfig, inv *inventory.Inventory) error {
	keyFile := cmp.Or(cfg.keyFile, filepath.Join(cfg.data, "vault.key"))
	key, source, created, err := vault.LoadKey(keyFile)
	if err != nil {
		return &exitError{ExitFailed, fmt.Errorf("vault key: %w", err)}
	}
	if created {
		fmt.Fprintf(g.stderr, "postrotate: created a new vault key in %s: BACK IT UP — without it the record store and the rotated passwords cannot be read\n", keyFile)
		log.Warn().Str("key_file", keyFile).Msg("created a new vault key: back it up")
	}
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
		if err := checkDataKey(cfg.data, key, source); err != nil {
			return &exitError{ExitFailed, err}
		}
		b, err := broker.Start(broker.Options{
			StoreDir: filepath.Join(cfg.data, "jetstream"), Listen: cfg.natsListen, Logger: &log,
			EncryptionKey: key.SubKey("jetstream").String(),
		})
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
		Logger:      &log,
		Key:         &key,
		KeySource:   source,
		Force:       cfg.force,
		NoSchedules: cfg.noSchedules,
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

// keyCheckAAD binds the key check file's content to its purpose.
const keyCheckAAD = "postrotate data directory key check"

// checkDataKey refuses to open a data directory with another key than the
// one it was created with (the encrypted JetStream store would not load,
// and unclearly): the file key-check under dir holds a value sealed with
// the key. A directory with a JetStream store but no check file was
// written without encryption by an earlier version.
func checkDataKey(dir string, key vault.Key, source string) error {
	check := filepath.Join(dir, "key-check")
	data, err := os.ReadFile(check)
	switch {
	case err == nil:
		if _, err := key.Open(data, []byte(keyCheckAAD)); err != nil {
			return fmt.Errorf("the vault key from %s is not the key the data directory %s was created with: use the key you backed up (file or $%s), or start with an empty --data", source, dir, vault.KeyEnv)
		}
		return nil
	case !errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("read %s: %w", check, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "jetstream")); err == nil {
		return fmt.Errorf("the data directory %s holds a JetStream store written without encryption by an earlier version of postrotate: move it aside (or let its rotations finish with that version) and start again", dir)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create data directory: %w", err)
	}
	if err := os.WriteFile(check, key.Seal([]byte("ok"), []byte(keyCheckAAD)), 0o600); err != nil {
		return fmt.Errorf("write %s: %w", check, err)
	}
	return nil
}
