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
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"github.com/spf13/cobra"

	"github.com/postrotate/postrotate/coordinator/broker"
	"github.com/postrotate/postrotate/coordinator/dispatch"
	"github.com/postrotate/postrotate/coordinator/identity"
	"github.com/postrotate/postrotate/coordinator/inventory"
	"github.com/postrotate/postrotate/coordinator/server"
	"github.com/postrotate/postrotate/coordinator/vault"
	"github.com/postrotate/postrotate/messages"
	"github.com/postrotate/postrotate/messages/layout"
	"github.com/postrotate/postrotate/worker"
	"github.com/postrotate/postrotate/worker/natsconn"
)

type serveConfig struct {
	inventory, data, httpAddr, natsListen, natsURL, prefix, keyFile string
	apiTokenFile, tlsCert, tlsKey                                   string
	localWorkers, force, noSchedules, insecureWorkers               bool
	pickupTimeout, ackWait, pinnedTTL                               time.Duration
	replicas                                                        int
}

func newServe(g *globals) *cobra.Command {
	var cfg serveConfig
	c := &cobra.Command{
		Use:   "serve --inventory FILE [--data DIR] [--http ADDR] [--nats-listen ADDR | --nats URL [--replicas N]]",
		Short: "Run the coordinator as a service with an HTTP API",
		Long: `Run the coordinator as a long-lived service. By default it embeds a
nats-server with JetStream that listens on --nats-listen (workers connect
there) and stores its data under --data; with --nats it uses an external
NATS/JetStream and embeds nothing (on a cluster, --replicas 3 replicates
every stream and bucket serve creates).

Rotations are started through the HTTP API (or 'postrotate rotate --server'),
or by the users' schedules, run in parallel for different users, and are
kept in JetStream: a coordinator killed mid-rotation resumes it when it
starts again.

The inventory is applied to the record store at start: records and scripts
are updated, but a password postrotate rotated since is kept (--force takes
the inventory's). The store, and with the embedded server all of JetStream's
data, is encrypted with the vault key: $POSTROTATE_VAULT_KEY, or the file
--key-file (created on first start: back it up).

Workers are enrolled with 'postrotate worker add HOST', which writes the
credentials file 'postrotate-worker --creds' reads. The embedded nats-server
admits only the coordinator and the enrolled workers, each allowed to run
its own host's tasks only; tasks are signed and their secrets sealed for
their host's worker. --insecure-workers turns all of that off, for
development with 'postrotate-worker --host --nats'.

With --api-token-file (created with a random token if missing) or
$POSTROTATE_API_TOKEN, every API request but /healthz needs
"Authorization: Bearer <token>".`,
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
	f.IntVar(&cfg.replicas, "replicas", 1, "replicas of every stream and bucket serve creates (3 on a NATS cluster of 3 or more nodes; --nats only)")
	f.StringVar(&cfg.keyFile, "key-file", "", "vault key file (default: vault.key under --data); $"+vault.KeyEnv+" wins")
	f.BoolVar(&cfg.force, "force", false, "replace the passwords postrotate rotated with the inventory's")
	f.BoolVar(&cfg.noSchedules, "no-schedules", false, "do not fire scheduled rotations (only those asked for)")
	f.StringVar(&cfg.apiTokenFile, "api-token-file", "", "require this API token (file created with a random token if missing; default $"+apiTokenEnv+")")
	f.BoolVar(&cfg.insecureWorkers, "insecure-workers", false, "development only: accept workers without credentials (NATS without authentication, tasks neither signed nor sealed)")
	f.StringVar(&cfg.tlsCert, "tls-cert", "", "serve HTTPS with this certificate (PEM; with --tls-key)")
	f.StringVar(&cfg.tlsKey, "tls-key", "", "private key of --tls-cert (PEM)")
	_ = c.MarkFlagRequired("inventory")
	return c
}

func serve(ctx context.Context, g *globals, log zerolog.Logger, cfg serveConfig, inv *inventory.Inventory) error {
	if (cfg.tlsCert == "") != (cfg.tlsKey == "") {
		return usage(errors.New("give both --tls-cert and --tls-key, or neither"))
	}
	if cfg.replicas < 1 {
		return usage(fmt.Errorf("--replicas %d: must be at least 1", cfg.replicas))
	}
	if cfg.replicas > 1 && cfg.natsURL == "" {
		return usage(fmt.Errorf("--replicas %d needs a NATS cluster (--nats URL): the embedded nats-server is a single node", cfg.replicas))
	}
	token, tokenCreated, err := serveToken(cfg.apiTokenFile)
	if err != nil {
		return usage(err)
	}
	if tokenCreated {
		fmt.Fprintf(g.stderr, "postrotate: created an API token in %s: clients send it with --api-token-file %s\n", cfg.apiTokenFile, cfg.apiTokenFile)
	}
	if cfg.natsURL == "" {
		// One serve per JetStream store: taken before the key file there
		// is read or created.
		unlock, err := lockDataDir(cfg.data)
		if err != nil {
			if errors.Is(err, errDataLocked) {
				return usage(err)
			}
			return &exitError{ExitFailed, err}
		}
		defer unlock()
	}
	keyFile := cmp.Or(cfg.keyFile, filepath.Join(cfg.data, "vault.key"))
	key, source, created, err := vault.LoadKey(keyFile)
	if err != nil {
		return &exitError{ExitFailed, fmt.Errorf("vault key: %w", err)}
	}
	if created {
		fmt.Fprintf(g.stderr, "postrotate: created a new vault key in %s: BACK IT UP — without it the record store and the rotated passwords cannot be read\n", keyFile)
		log.Warn().Str("key_file", keyFile).Msg("created a new vault key: back it up")
	}
	subj := messages.Subjects{Prefix: cfg.prefix}
	coordUser := identity.CoordinatorUser(key)
	coordPub, _ := coordUser.PublicKey()
	userOpt, err := broker.UserOption(coordUser)
	if err != nil {
		return &exitError{ExitFailed, err}
	}
	natsOpts := []nats.Option{
		nats.Name("postrotate-coordinator"),
		nats.MaxReconnects(-1),
		nats.ErrorHandler(natsconn.ErrorHandler(log)),
	}
	var (
		nc        *nats.Conn
		b         *broker.Broker
		natsURL   string
		onWorkers func([]identity.Worker) error
	)
	if cfg.natsURL != "" {
		if nc, err = connectExternal(cfg.natsURL, natsOpts, userOpt, cfg.insecureWorkers, log); err != nil {
			return &exitError{ExitFailed, err}
		}
		natsURL = cfg.natsURL
	} else {
		if err := checkDataKey(cfg.data, key, source); err != nil {
			return &exitError{ExitFailed, err}
		}
		bopts := broker.Options{
			StoreDir: filepath.Join(cfg.data, "jetstream"), Listen: cfg.natsListen, Logger: &log,
			EncryptionKey: key.SubKey("jetstream").String(),
		}
		if !cfg.insecureWorkers {
			// The enrolled workers are admitted once the identities
			// bucket is read (server Start, OnWorkers).
			bopts.Users = identity.Users(subj, coordPub, nil)
			natsOpts = append(natsOpts, userOpt)
		}
		if b, err = broker.Start(bopts); err != nil {
			return &exitError{ExitFailed, err}
		}
		defer b.Shutdown()
		if nc, err = b.Connect(natsOpts...); err != nil {
			return &exitError{ExitFailed, err}
		}
		natsURL = advertisedURL(cfg.natsListen, b.ClientURL())
		if !cfg.insecureWorkers {
			onWorkers = func(ws []identity.Worker) error {
				if err := b.SetUsers(identity.Users(subj, coordPub, ws)); err != nil {
					return err
				}
				log.Info().Int("workers", len(ws)).Msg("nats users reloaded")
				return nil
			}
		}
		log.Info().Str("url", b.ClientURL()).Bool("authentication", !cfg.insecureWorkers).Msg("embedded nats-server listening")
	}
	defer nc.Close()
	worker.WarnMaxPayload(log, nc)
	if cfg.pickupTimeout <= cfg.pinnedTTL {
		log.Warn().Dur("pickup_timeout", cfg.pickupTimeout).Dur("pinned_ttl", cfg.pinnedTTL).
			Msg("--pickup-timeout is not above --pinned-ttl: when a host's pinned worker crashes, its steps fail before the host's other worker may take over")
	}
	if cfg.insecureWorkers {
		log.Warn().Msg("--insecure-workers: tasks are neither signed nor sealed, and the embedded NATS admits any client with every right; for development only")
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return &exitError{ExitFailed, err}
	}
	if cfg.natsURL != "" {
		if err := waitJetStream(ctx, js, time.Minute, log); err != nil {
			return &exitError{ExitFailed, err}
		}
	}
	var storage server.Storage
	if b != nil {
		storage = b // a full disk: jetstream restarted once space returns
	}
	srv, err := server.New(js, server.Options{
		Inventory: inv,
		Dispatch: dispatch.Options{
			Layout:        layout.Layout{Subjects: subj, AckWait: cfg.ackWait, PinnedTTL: cfg.pinnedTTL, Replicas: cfg.replicas},
			PickupTimeout: cfg.pickupTimeout,
		},
		Logger:      &log,
		Key:         &key,
		KeySource:   source,
		Force:       cfg.force,
		NoSchedules: cfg.noSchedules,
		Unsigned:    cfg.insecureWorkers,
		OnWorkers:   onWorkers,
		NATSURL:     natsURL,
		APIToken:    token,
		Storage:     storage,
	})
	if err != nil {
		return &exitError{ExitFailed, err}
	}
	if err := srv.Start(ctx); err != nil {
		return &exitError{ExitFailed, fmt.Errorf("start: %w", err)}
	}
	if cfg.localWorkers {
		stop, err := startLocalWorkers(ctx, srv, b, js, subj, server.Hosts(inv), cfg.insecureWorkers, log)
		defer stop()
		if err != nil {
			return &exitError{ExitFailed, err}
		}
	}

	ln, err := net.Listen("tcp", cfg.httpAddr)
	if err != nil {
		return &exitError{ExitFailed, fmt.Errorf("http listen: %w", err)}
	}
	if token == "" && !isLoopback(ln.Addr()) {
		log.Warn().Str("http", ln.Addr().String()).Msg("the HTTP API listens beyond loopback without an API token: anyone who reaches it can start rotations, enroll workers and read the passwords (serve --api-token-file)")
	}
	hs := &http.Server{Handler: srv.Handler(), ReadHeaderTimeout: 10 * time.Second}
	httpErr := make(chan error, 1)
	scheme := "http"
	if cfg.tlsCert != "" {
		scheme = "https"
		go func() { httpErr <- hs.ServeTLS(ln, cfg.tlsCert, cfg.tlsKey) }()
	} else {
		go func() { httpErr <- hs.Serve(ln) }()
	}
	log.Info().Str("http", ln.Addr().String()).Bool("tls", cfg.tlsCert != "").Bool("api_token", token != "").Msg("postrotate serving")
	fmt.Fprintf(g.stderr, "postrotate: serving HTTP on %s://%s\n", scheme, ln.Addr())

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

// connectExternal connects to an external NATS as the coordinator's nkey
// user. A server that does not authenticate clients (it offers no nonce)
// gets a plain connection and a warning: its workers are not restricted.
func connectExternal(url string, opts []nats.Option, user nats.Option, insecure bool, log zerolog.Logger) (*nats.Conn, error) {
	nc, err := nats.Connect(url, append(slices.Clone(opts), user)...)
	if errors.Is(err, nats.ErrNkeysNotSupported) {
		if !insecure {
			log.Warn().Str("url", url).Msg("the NATS server does not authenticate clients: workers are not restricted to their host (configure its users: postrotate worker add --nats-config)")
		}
		nc, err = nats.Connect(url, opts...)
	}
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", url, err)
	}
	return nc, nil
}

// waitJetStream waits until JetStream answers, for up to timeout: a
// cluster that has just started answers once it has elected its meta
// leader, a few seconds after its servers accept clients.
func waitJetStream(ctx context.Context, js jetstream.JetStream, timeout time.Duration, log zerolog.Logger) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		actx, acancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := js.AccountInfo(actx)
		acancel()
		if err == nil {
			return nil
		}
		log.Info().Err(err).Msg("waiting for JetStream")
		select {
		case <-ctx.Done():
			return fmt.Errorf("jetstream not available after %s: %w", timeout, err)
		case <-time.After(time.Second):
		}
	}
}

// advertisedURL is the NATS URL written into workers' credentials: the
// embedded server's, unless it listens on every address (then the
// enrolment must say which with --nats).
func advertisedURL(listen, clientURL string) string {
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return ""
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		return ""
	}
	return clientURL
}

func isLoopback(a net.Addr) bool {
	ta, ok := a.(*net.TCPAddr)
	return ok && ta.IP.IsLoopback()
}

// startLocalWorkers starts an in-process worker for every host. Each gets
// its identity from the store (created on first start, then reused) and,
// with the embedded server, its own connection as its own NATS user; with
// an external NATS they share the coordinator's connection. stop stops
// them together, letting their scripts finish for up to a minute.
func startLocalWorkers(ctx context.Context, srv *server.Server, b *broker.Broker, js jetstream.JetStream, subj messages.Subjects,
	hosts []string, insecure bool, log zerolog.Logger) (stop func(), err error) {
	var (
		workers []*worker.Worker
		conns   []*nats.Conn
	)
	stop = func() {
		stopCtx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		var wg sync.WaitGroup
		for _, w := range workers {
			wg.Go(func() { _ = w.Stop(stopCtx) })
		}
		wg.Wait()
		for _, nc := range conns {
			nc.Close()
		}
	}
	for _, h := range hosts {
		wopts := worker.Options{Host: h, Name: h + "-inprocess", Subjects: subj, Logger: &log}
		wjs := js
		if !insecure {
			creds, err := srv.LocalWorker(ctx, h)
			if err != nil {
				return stop, fmt.Errorf("identity of the in-process worker of %s: %w", h, err)
			}
			if wopts.Trust, err = creds.Trust(); err != nil {
				return stop, err
			}
			if b != nil {
				wlog := log.With().Str("host", h).Logger()
				nopts, err := natsconn.Options(natsconn.Config{Host: h, Creds: &creds, Logger: &wlog})
				if err != nil {
					return stop, err
				}
				nc, err := b.Connect(append(nopts, nats.Name("postrotate in-process worker "+h))...)
				if err != nil {
					return stop, fmt.Errorf("connect the in-process worker of %s: %w", h, err)
				}
				conns = append(conns, nc)
				if wjs, err = jetstream.New(nc); err != nil {
					return stop, err
				}
			}
		}
		w, err := worker.New(wjs, wopts)
		if err != nil {
			return stop, err
		}
		if err := w.Start(ctx); err != nil {
			return stop, err
		}
		workers = append(workers, w)
	}
	return stop, nil
}

// errDataLocked is the error of a data directory another serve holds.
var errDataLocked = errors.New("data directory in use")

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
