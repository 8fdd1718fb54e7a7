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
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"
	"github.com/rs/zerolog"
	"github.com/spf13/cobra"

	"github.com/postrotate/postrotate/coordinator/app"
	"github.com/postrotate/postrotate/coordinator/broker"
	"github.com/postrotate/postrotate/coordinator/identity"
	"github.com/postrotate/postrotate/coordinator/inventory"
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
	if err := cfg.check(); err != nil {
		return usage(err)
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
	key, source, err := openKey(g, log, cfg)
	if err != nil {
		return &exitError{ExitFailed, err}
	}
	conn, err := connectNATS(ctx, cfg, key, source, log)
	if err != nil {
		return &exitError{ExitFailed, err}
	}
	defer conn.close()
	cfg.warn(log)
	a, err := app.New(conn.js, cfg.appOptions(inv, conn, key, source, token, &log))
	if err != nil {
		return &exitError{ExitFailed, err}
	}
	if err := a.Start(ctx); err != nil {
		stopApp(a, log)
		return &exitError{ExitFailed, fmt.Errorf("start: %w", err)}
	}
	defer stopApp(a, log)
	return serveHTTP(ctx, g, log, cfg, token, a.Handler())
}

// check refuses flags that do not go together.
func (cfg serveConfig) check() error {
	switch {
	case (cfg.tlsCert == "") != (cfg.tlsKey == ""):
		return errors.New("give both --tls-cert and --tls-key, or neither")
	case cfg.replicas < 1:
		return fmt.Errorf("--replicas %d: must be at least 1", cfg.replicas)
	case cfg.replicas > 1 && cfg.natsURL == "":
		return fmt.Errorf("--replicas %d needs a NATS cluster (--nats URL): the embedded nats-server is a single node", cfg.replicas)
	}
	return nil
}

// warn logs what the configuration puts at risk.
func (cfg serveConfig) warn(log zerolog.Logger) {
	if cfg.pickupTimeout <= cfg.pinnedTTL {
		log.Warn().Dur("pickup_timeout", cfg.pickupTimeout).Dur("pinned_ttl", cfg.pinnedTTL).
			Msg("--pickup-timeout is not above --pinned-ttl: when a host's pinned worker crashes, its steps fail before the host's other worker may take over")
	}
	if cfg.insecureWorkers {
		log.Warn().Msg("--insecure-workers: tasks are neither signed nor sealed, and the embedded NATS admits any client with every right; for development only")
	}
}

// appOptions are the App's options from the flags and what serve opened.
func (cfg serveConfig) appOptions(inv *inventory.Inventory, conn *natsConn, key vault.Key, source, token string, log *zerolog.Logger) app.Options {
	opts := app.Options{
		Inventory:     inv,
		Layout:        layout.Layout{Subjects: conn.subj, AckWait: cfg.ackWait, PinnedTTL: cfg.pinnedTTL, Replicas: cfg.replicas},
		PickupTimeout: cfg.pickupTimeout,
		Logger:        log,
		Key:           &key,
		KeySource:     source,
		Force:         cfg.force,
		NoSchedules:   cfg.noSchedules,
		Unsigned:      cfg.insecureWorkers,
		OnWorkers:     conn.onWorkers,
		NATSURL:       conn.url,
		APIToken:      token,
		LocalWorkers:  cfg.localWorkers,
		Broker:        conn.broker,
	}
	if conn.broker != nil {
		opts.Storage = conn.broker // a full disk: jetstream restarted once space returns
	}
	return opts
}

// openKey loads the vault key, or creates it (and says so) on first start.
func openKey(g *globals, log zerolog.Logger, cfg serveConfig) (vault.Key, string, error) {
	keyFile := cmp.Or(cfg.keyFile, filepath.Join(cfg.data, "vault.key"))
	key, source, created, err := vault.LoadKey(keyFile)
	if err != nil {
		return vault.Key{}, "", fmt.Errorf("vault key: %w", err)
	}
	if created {
		fmt.Fprintf(g.stderr, "postrotate: created a new vault key in %s: BACK IT UP — without it the record store and the rotated passwords cannot be read\n", keyFile)
		log.Warn().Str("key_file", keyFile).Msg("created a new vault key: back it up")
	}
	return key, source, nil
}

// stopApp stops the App, letting in-process workers finish their scripts.
func stopApp(a *app.App, log zerolog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := a.Stop(ctx); err != nil {
		log.Warn().Err(err).Msg("stop")
	}
}

// natsConn is serve's connection to NATS: to the embedded broker it
// started, or to an external NATS.
type natsConn struct {
	nc     *nats.Conn
	js     jetstream.JetStream
	broker *broker.Broker // nil with an external NATS
	subj   messages.Subjects
	// url is written into the enrolled workers' credentials.
	url string
	// onWorkers admits the enrolled workers' NATS users (embedded broker
	// with authentication only).
	onWorkers func([]identity.Worker) error
}

func (c *natsConn) close() {
	c.nc.Close()
	if c.broker != nil {
		c.broker.Shutdown()
	}
}

// connectNATS starts the embedded broker and connects to it as the
// coordinator, or connects to the external NATS of --nats.
func connectNATS(ctx context.Context, cfg serveConfig, key vault.Key, source string, log zerolog.Logger) (*natsConn, error) {
	c := &natsConn{subj: messages.Subjects{Prefix: cfg.prefix}}
	coordUser := identity.CoordinatorUser(key)
	userOpt, err := broker.UserOption(coordUser)
	if err != nil {
		return nil, err
	}
	natsOpts := []nats.Option{
		nats.Name("postrotate-coordinator"),
		nats.MaxReconnects(-1),
		nats.ErrorHandler(natsconn.ErrorHandler(log)),
	}
	if cfg.natsURL != "" {
		if c.nc, err = connectExternal(cfg.natsURL, natsOpts, userOpt, cfg.insecureWorkers, log); err != nil {
			return nil, err
		}
		c.url = cfg.natsURL
	} else if err := c.startBroker(cfg, key, source, coordUser, natsOpts, userOpt, log); err != nil {
		return nil, err
	}
	worker.WarnMaxPayload(log, c.nc)
	if c.js, err = jetstream.New(c.nc); err != nil {
		c.close()
		return nil, err
	}
	if cfg.natsURL != "" {
		if err := waitJetStream(ctx, c.js, time.Minute, log); err != nil {
			c.close()
			return nil, err
		}
	}
	return c, nil
}

// startBroker starts the embedded broker on --data, encrypted with the
// vault key, admitting only the coordinator (and, once the identities are
// read, the enrolled workers) unless --insecure-workers; and connects to it
// with natsOpts, as the coordinator's user (userOpt) unless
// --insecure-workers.
func (c *natsConn) startBroker(cfg serveConfig, key vault.Key, source string, coordUser nkeys.KeyPair, natsOpts []nats.Option, userOpt nats.Option, log zerolog.Logger) error {
	if err := checkDataKey(cfg.data, key, source); err != nil {
		return err
	}
	coordPub, _ := coordUser.PublicKey()
	bopts := broker.Options{
		StoreDir: filepath.Join(cfg.data, "jetstream"), Listen: cfg.natsListen, Logger: &log,
		EncryptionKey: key.SubKey("jetstream").String(),
	}
	if !cfg.insecureWorkers {
		// The enrolled workers are admitted once the identities bucket is
		// read (App Start, OnWorkers).
		bopts.Users = identity.Users(c.subj, coordPub, nil)
		natsOpts = append(slices.Clone(natsOpts), userOpt)
	}
	b, err := broker.Start(bopts)
	if err != nil {
		return err
	}
	if c.nc, err = b.Connect(natsOpts...); err != nil {
		b.Shutdown()
		return err
	}
	c.broker, c.url = b, advertisedURL(cfg.natsListen, b.ClientURL())
	if !cfg.insecureWorkers {
		c.onWorkers = func(ws []identity.Worker) error {
			if err := b.SetUsers(identity.Users(c.subj, coordPub, ws)); err != nil {
				return err
			}
			log.Info().Int("workers", len(ws)).Msg("nats users reloaded")
			return nil
		}
	}
	log.Info().Str("url", b.ClientURL()).Bool("authentication", !cfg.insecureWorkers).Msg("embedded nats-server listening")
	return nil
}

// serveHTTP serves handler on --http (HTTPS with --tls-cert) until ctx
// ends, then shuts the listener down.
func serveHTTP(ctx context.Context, g *globals, log zerolog.Logger, cfg serveConfig, token string, handler http.Handler) error {
	ln, err := net.Listen("tcp", cfg.httpAddr)
	if err != nil {
		return &exitError{ExitFailed, fmt.Errorf("http listen: %w", err)}
	}
	if token == "" && !isLoopback(ln.Addr()) {
		log.Warn().Str("http", ln.Addr().String()).Msg("the HTTP API listens beyond loopback without an API token: anyone who reaches it can start rotations, enroll workers and read the passwords (serve --api-token-file)")
	}
	hs := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second}
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
