package worker

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/postrotate/postrotate/executor"
	httpexec "github.com/postrotate/postrotate/executor/http"
	"github.com/postrotate/postrotate/executor/local"
	"github.com/postrotate/postrotate/executor/rotate"
	sshexec "github.com/postrotate/postrotate/executor/ssh"
	winrmexec "github.com/postrotate/postrotate/executor/winrm"
	"github.com/postrotate/postrotate/messages"
	"github.com/postrotate/postrotate/messages/envelope"
)

// Options configure a Worker. A zero field means its default.
type Options struct {
	// Host is the host id whose tasks this worker runs. Required.
	Host string
	// Name identifies this worker instance in results, in its registration
	// and in started markers. Defaults to "<hostname>-<pid>".
	Name string
	// Version is the worker's version, published in its registration.
	// Defaults to "dev".
	Version string
	// Subjects names subjects, streams and consumers. Defaults to the
	// "postrotate" prefix.
	Subjects messages.Subjects
	// Executors run scripts, keyed by runner (messages.RunnerLocal, ...).
	// Defaults to the local, http, ssh and winrm executors and the built-in
	// rotators, with their default options.
	Executors map[string]executor.Executor
	// Logger receives the worker's logs. Defaults to a disabled logger.
	Logger *zerolog.Logger
	// FetchWait bounds one pull request; it is also how long a graceful
	// Stop may wait for an idle worker. Defaults to 5s.
	FetchWait time.Duration
	// InProgressEvery is how often a running task's ack deadline is
	// extended. Defaults to a third of the consumer's AckWait.
	InProgressEvery time.Duration
	// PublishTimeout is the least time the worker keeps trying to publish
	// one result. A step's result is tried until its deadline at the
	// coordinator when that is later: the task's expiry plus the script's
	// timeout plus 30s (the coordinator's default kill grace), after which
	// the coordinator reports the step itself and a later result is
	// dropped. A hard stop leaves each of the publish, the started marker
	// and the ack 5s of tries (15s at most in all). Defaults to 1m.
	PublishTimeout time.Duration
	// PublishAttemptTimeout bounds one attempt to publish a result, or to
	// acknowledge a task, waiting for the broker's ack. An attempt whose
	// ack is lost (a broker restarted) is made again after it, under the
	// same message id, so the stream keeps one copy; while the connection
	// is down the worker waits for it to come back. A publish attempt
	// that times out is followed by one allowed twice as long, up to 8
	// times this, so that a large result still gets through a slow link.
	// Defaults to 2s.
	PublishAttemptTimeout time.Duration
	// HeartbeatEvery is how often the worker refreshes its registration in
	// the workers bucket; keep it well under the bucket's TTL. Defaults to
	// 5s.
	HeartbeatEvery time.Duration
	// NakDelay is how long a task waits before it is delivered again when
	// its started marker could not be read or written (the started bucket
	// is missing or unreachable). Defaults to 5s.
	NakDelay time.Duration
	// Now returns the current time. Defaults to time.Now.
	Now func() time.Time
	// Trust holds the coordinator's public keys and this worker's curve
	// key. With it the worker runs only what the coordinator signed for
	// this host, once, with a secret sealed for this worker; it refuses
	// anything else (see the package doc). Without it tasks are not
	// verified and carry their secrets in clear: for tests and a trusted
	// network only, and Start logs a warning.
	Trust *envelope.Trust
}

// Worker runs the tasks of one host.
type Worker struct {
	js   jetstream.JetStream
	opts Options
	log  zerolog.Logger

	// startedKV is the handle of the started bucket, opened on first use; only
	// the loop's goroutine touches it.
	startedKV jetstream.KeyValue
	// pinID is the id the consumer pinned this worker with (header
	// Nats-Pin-Id of its tasks), "" before its first task; only the loop's
	// goroutine touches it.
	pinID string

	mu       sync.Mutex
	started  bool
	stopping chan struct{} // closed by Stop: fetch no more
	done     chan struct{} // closed when the loop has ended
	hardStop context.CancelFunc
	hb       *heartbeat // ended by Stop, after the loop
}

// ErrNoHost is returned by New when Options.Host is empty.
var ErrNoHost = errors.New("worker: host is required")

// ErrInvalidOptions is wrapped by New's errors for other bad options.
var ErrInvalidOptions = errors.New("worker: invalid options")

// New returns a worker for opts.Host using js.
func New(js jetstream.JetStream, opts Options) (*Worker, error) {
	if opts.Host == "" {
		return nil, ErrNoHost
	}
	if opts.Name == "" {
		hn, _ := os.Hostname()
		opts.Name = fmt.Sprintf("%s-%d", cmp.Or(hn, "worker"), os.Getpid())
	}
	if opts.Executors == nil {
		opts.Executors = map[string]executor.Executor{
			messages.RunnerLocal:  local.New(local.Options{}),
			messages.RunnerHTTP:   httpexec.New(httpexec.Options{}),
			messages.RunnerSSH:    sshexec.New(sshexec.Options{}),
			messages.RunnerWinRM:  winrmexec.New(winrmexec.Options{}),
			messages.RunnerRotate: rotate.New(rotate.Options{}),
		}
	}
	opts.FetchWait = cmp.Or(opts.FetchWait, 5*time.Second)
	opts.PublishTimeout = cmp.Or(opts.PublishTimeout, time.Minute)
	opts.PublishAttemptTimeout = cmp.Or(opts.PublishAttemptTimeout, 2*time.Second)
	opts.Version = cmp.Or(opts.Version, "dev")
	opts.HeartbeatEvery = cmp.Or(opts.HeartbeatEvery, 5*time.Second)
	opts.NakDelay = cmp.Or(opts.NakDelay, 5*time.Second)
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"FetchWait", opts.FetchWait}, {"InProgressEvery", opts.InProgressEvery}, {"PublishTimeout", opts.PublishTimeout},
		{"PublishAttemptTimeout", opts.PublishAttemptTimeout},
		{"HeartbeatEvery", opts.HeartbeatEvery}, {"NakDelay", opts.NakDelay},
	} {
		if d.v < 0 {
			return nil, fmt.Errorf("%w: %s: %s is negative", ErrInvalidOptions, d.name, d.v)
		}
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	log := zerolog.Nop()
	if opts.Logger != nil {
		log = *opts.Logger
	}
	log = log.With().Str("component", "worker").Str("host", opts.Host).Str("worker", opts.Name).Logger()
	return &Worker{js: js, opts: opts, log: log}, nil
}

// Start binds to the host's consumer, starts pulling tasks and starts the
// heartbeat that keeps the worker registered. It returns at once; the
// consumer must exist (the coordinator creates it). The KV buckets need not
// exist yet: until they do, the heartbeat logs and retries, and tasks are
// not run but delivered again later (see the package doc).
func (w *Worker) Start(ctx context.Context) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.started {
		return errors.New("worker: already started")
	}
	cons, err := w.js.Consumer(ctx, w.opts.Subjects.TasksStream(), w.opts.Subjects.Consumer(w.opts.Host))
	if err != nil {
		return fmt.Errorf("bind consumer of host %q: %w", w.opts.Host, err)
	}
	if w.opts.InProgressEvery == 0 {
		w.opts.InProgressEvery = cmp.Or(cons.CachedInfo().Config.AckWait/3, 10*time.Second)
	}
	w.checkLocalScripts()
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	w.started = true
	w.stopping = make(chan struct{})
	w.done = make(chan struct{})
	w.hardStop = cancel
	// The heartbeat outlives a hard stop: it ends once the loop has.
	w.hb = w.startHeartbeat(context.WithoutCancel(ctx))
	go w.loop(runCtx, cons)
	if w.opts.Trust == nil {
		w.log.Warn().Msg("tasks are not verified: start the worker with credentials")
	}
	WarnMaxPayload(w.log, w.js.Conn())
	w.log.Info().Bool("verified", w.opts.Trust != nil).Msg("worker started")
	return nil
}

// Stop stops pulling tasks and waits for the running script to finish and
// be reported; then it stops the heartbeat and deletes the worker's
// registration (waiting at most 5s for the broker to confirm). When ctx ends first,
// the pull and the running script are cancelled (the script's process tree
// is killed) and Stop returns ctx.Err(). Stop is safe to call twice, and
// before Start.
func (w *Worker) Stop(ctx context.Context) error {
	w.mu.Lock()
	if !w.started {
		w.mu.Unlock()
		return nil
	}
	select {
	case <-w.stopping:
	default:
		close(w.stopping)
	}
	done, hardStop, hb := w.done, w.hardStop, w.hb
	w.mu.Unlock()

	var err error
	select {
	case <-done:
	case <-ctx.Done():
		hardStop()
		<-done
		err = ctx.Err()
	}
	hardStop()
	hb.stop()
	// Executors that hold connections (SSH) release them.
	for _, ex := range w.opts.Executors {
		if c, ok := ex.(io.Closer); ok {
			_ = c.Close()
		}
	}
	return err
}

func (w *Worker) loop(ctx context.Context, cons jetstream.Consumer) {
	defer close(w.done)
	stopped, release := stopContext(w.stopping)
	defer release()
	backoff := time.Duration(0)
	for {
		select {
		case <-w.stopping:
			w.unpin(cons)
			w.log.Info().Msg("worker stopped")
			return
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		fetchCtx, cancel := context.WithTimeout(ctx, w.opts.FetchWait)
		// A stop ends an idle pull at once instead of after FetchWait; a
		// task handed over meanwhile is not acknowledged and comes back.
		stopPull := context.AfterFunc(stopped, cancel)
		batch, err := cons.Fetch(1, jetstream.FetchContext(fetchCtx), jetstream.FetchPriorityGroup(messages.PriorityGroup))
		if err != nil {
			stopPull()
			cancel()
			backoff = nextBackoff(backoff)
			w.log.Warn().Err(err).Dur("retry_in", backoff).Msg("pull tasks")
			continue
		}
		for msg := range batch.Messages() {
			stopPull() // the task runs to its end even when stopping
			if id := msg.Headers().Get(pinIDHeader); id != "" {
				w.pinID = id
			}
			w.handle(ctx, msg)
		}
		stopPull()
		cancel()
		if err := batch.Error(); err != nil && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
			backoff = nextBackoff(backoff)
			w.log.Warn().Err(err).Dur("retry_in", backoff).Msg("pull tasks")
			continue
		}
		backoff = 0
	}
}

// pinIDHeader carries, on a task of a consumer with the pinned-client
// priority policy, the id of the client it is pinned to.
const pinIDHeader = "Nats-Pin-Id"

// unpin hands the host's tasks over at once when this worker, stopping, is
// the one the consumer is pinned to: otherwise the host's other worker, or
// this one restarted, waits the consumer's PinnedTTL before it receives a
// task. It asks through $JS.API.CONSUMER.UNPIN (the worker's NATS user may
// not read the stream, which the jetstream API's Stream.UnpinConsumer
// needs); a failure only costs that wait.
func (w *Worker) unpin(cons jetstream.Consumer) {
	if w.pinID == "" {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	info, err := cons.Info(ctx)
	if err != nil {
		w.log.Warn().Err(err).Msg("unpin: consumer info")
		return
	}
	pinned := false
	for _, g := range info.PriorityGroups {
		pinned = pinned || (g.Group == messages.PriorityGroup && g.PinnedClientID == w.pinID)
	}
	if !pinned {
		return
	}
	req, err := json.Marshal(struct {
		Group string `json:"group"`
	}{messages.PriorityGroup})
	if err != nil {
		return
	}
	reply, err := w.js.Conn().RequestWithContext(ctx, fmt.Sprintf("$JS.API.CONSUMER.UNPIN.%s.%s", info.Stream, info.Name), req)
	var resp struct {
		Error *struct {
			Description string `json:"description"`
		} `json:"error"`
	}
	switch {
	case err != nil:
	case json.Unmarshal(reply.Data, &resp) != nil:
		err = fmt.Errorf("bad reply %q", reply.Data)
	case resp.Error != nil:
		err = errors.New(resp.Error.Description)
	}
	if err != nil {
		w.log.Warn().Err(err).Msg("unpin: the host's tasks go to another worker after the consumer's pinned TTL")
		return
	}
	w.log.Info().Msg("unpinned: the host's next task goes to whichever of its workers pulls")
}

func nextBackoff(d time.Duration) time.Duration {
	return min(max(2*d, 100*time.Millisecond), 5*time.Second)
}

// stopContext returns a context cancelled when stopping is closed, and a
// release function that ends its goroutine.
func stopContext(stopping <-chan struct{}) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		select {
		case <-stopping:
		case <-ctx.Done():
		}
		cancel()
	}()
	return ctx, cancel
}
