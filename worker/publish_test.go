package worker

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/postrotate/postrotate/executor"
	"github.com/postrotate/postrotate/executor/local"
	"github.com/postrotate/postrotate/executor/proctest"
	"github.com/postrotate/postrotate/messages"
	"github.com/postrotate/postrotate/worker/natsconn"
	"github.com/postrotate/postrotate/worker/workertest"
)

// A script printing far more than the server's max_payload (1 MB by
// default) on both streams: its result arrives at once, shortened to fit,
// and the task is acknowledged.
func TestResultFitsMaxPayload(t *testing.T) {
	t.Parallel()
	logs := new(proctest.Buffer)
	log := zerolog.New(logs)
	w, b := setup(t, config{}, func(o *Options) {
		o.Executors = map[string]executor.Executor{messages.RunnerLocal: local.New(local.Options{TempDir: t.TempDir()})}
		o.Logger = &log
	})
	start(t, w)
	if !strings.Contains(logs.String(), "max_payload is below two capped outputs") {
		t.Errorf("no warning at Start about the server's 1 MB max_payload:\n%s", logs)
	}
	tk := task(1)
	// Binary on stderr: escaped, it grows up to sixfold.
	tk.Script.Content = []byte("head -c 50000000 /dev/zero | tr '\\0' a\nhead -c 50000000 /dev/urandom >&2\n")
	tk.Script.TimeoutMS = 120_000
	b.publish(t, tk)
	rr := b.result(t)
	if !rr.Success || !rr.StdoutTruncated || !rr.StderrTruncated {
		t.Fatalf("result: success %v, truncated %v/%v, error %q", rr.Success, rr.StdoutTruncated, rr.StderrTruncated, rr.Error)
	}
	if !strings.HasPrefix(rr.Stdout, "aaaa") || !strings.HasSuffix(rr.Stdout, "aaaa") || !strings.Contains(rr.Stdout, " bytes omitted]\n") {
		t.Errorf("stdout is not head, marker and tail: %.100q...", rr.Stdout)
	}
	s, err := b.js.Stream(t.Context(), b.subj.ResultsStream())
	if err != nil {
		t.Fatal(err)
	}
	stored, err := s.GetLastMsgForSubject(t.Context(), b.subj.Result("rot-1", 1))
	if err != nil {
		t.Fatal(err)
	}
	// Within the server's max_payload, with room for the headers.
	mp := int(b.js.Conn().MaxPayload())
	if mp != 1<<20 {
		t.Fatalf("server max_payload %d, want the default 1 MiB", mp)
	}
	if len(stored.Data)+messages.ResultHeaderRoom > mp {
		t.Errorf("stored result %d bytes, server max_payload %d", len(stored.Data), mp)
	}
	// The room is used: stdout keeps at least a quarter of it (stderr,
	// escaped, takes more room for as many bytes).
	if len(rr.Stdout) < mp/4 {
		t.Errorf("stdout kept %d bytes of a %d bytes max_payload", len(rr.Stdout), mp)
	}
	b.waitDrained(t)
	if !strings.Contains(logs.String(), "result output shortened to fit the server's max_payload") {
		t.Errorf("the shortening is not logged:\n%s", logs)
	}
}

// A broker that restarts right after the script finished loses the
// worker's publish, or its ack: the worker publishes again once it has
// reconnected, in seconds rather than after PublishTimeout (1m), the
// stream keeps one copy, and the task is acknowledged, not redelivered to
// be reported in doubt.
func TestResultSurvivesBrokerRestart(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name string
		// requestLost: the publish never reaches the broker; otherwise the
		// broker stores the result and its ack is lost.
		requestLost bool
	}{
		{"AckLost", false},
		{"PublishLost", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			br := startBroker(t)
			msgID := messages.ResultMsgID("rot-1", 1)
			link := newLink(t, br.addr, []byte(jetstream.MsgIDHeader+": "+msgID))
			b := &bundle{cfg: config{ackWait: 30 * time.Second, maxDeliver: 5, workerTTL: 30 * time.Second}}
			_, b.js = br.connect(t, br.url)
			b.createLayout(t)

			logs := new(proctest.Buffer)
			log := zerolog.New(logs)
			opts, err := natsconn.Options(natsconn.Config{Host: host, Logger: &log})
			if err != nil {
				t.Fatal(err)
			}
			wnc, err := nats.Connect("nats://"+link.addr(), opts...)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(wnc.Close)
			wjs, err := jetstream.New(wnc)
			if err != nil {
				t.Fatal(err)
			}
			var runs atomic.Int32
			exec := &afterRun{Executor: local.New(local.Options{TempDir: t.TempDir()}), then: func() {
				runs.Add(1)
				link.lose(tt.requestLost)
			}}
			w := b.worker(t, wjs, exec, func(o *Options) { o.Logger = &log })
			start(t, w)

			stored, err := b.js.OrderedConsumer(t.Context(), b.subj.ResultsStream(), jetstream.OrderedConsumerConfig{
				FilterSubjects: []string{b.subj.Result("rot-1", 1)},
			})
			if err != nil {
				t.Fatal(err)
			}
			tk := task(1)
			tk.Script.Content = []byte("echo changed\n")
			b.publish(t, tk)
			if tt.requestLost {
				select {
				case <-link.lost:
				case <-time.After(20 * time.Second):
					t.Fatal("the worker published no result within 20s")
				}
			} else {
				// Stored: the results stream delivers it.
				workertest.Next(t, stored, 20*time.Second)
			}
			br.restart(t)
			restarted := time.Now()

			// An ack publishes no event: polled.
			workertest.Eventually(t, 15*time.Second, "task acknowledged after the restart", func() bool {
				ctx, cancel := context.WithTimeout(t.Context(), time.Second)
				defer cancel()
				return b.pending(ctx) == 0
			})
			t.Logf("acknowledged %s after the restart", time.Since(restarted).Round(time.Millisecond))
			if n := b.resultsOn(t.Context(), msgID); n != 1 {
				t.Errorf("the results stream holds %d results of the step, want 1", n)
			}
			rr := b.storedResult(t, b.subj.Result("rot-1", 1))
			if !rr.Success || rr.Stdout != "changed\n" || rr.Attempt != 1 {
				t.Errorf("stored result %+v", rr)
			}
			info, err := b.js.Consumer(t.Context(), b.subj.TasksStream(), b.subj.Consumer(host))
			if err != nil {
				t.Fatal(err)
			}
			if ci := info.CachedInfo(); ci.NumAckPending != 0 || ci.NumRedelivered != 0 || ci.Delivered.Consumer != 1 {
				t.Errorf("consumer: %d pending acks, %d redelivered, %d delivered: want the one delivery acknowledged",
					ci.NumAckPending, ci.NumRedelivered, ci.Delivered.Consumer)
			}
			if m := b.marker(t, tk.ID); m.ReportedAt.IsZero() {
				t.Errorf("marker not reported: %+v", m)
			}
			if n := runs.Load(); n != 1 {
				t.Errorf("script ran %d times", n)
			}
			if strings.Contains(logs.String(), "in doubt") {
				t.Errorf("logs say in doubt:\n%s", logs)
			}
		})
	}
}

// afterRun runs a script with Executor, then calls then.
type afterRun struct {
	executor.Executor
	then func()
}

func (a *afterRun) Run(ctx context.Context, job executor.Job) (executor.Result, error) {
	res, err := a.Executor.Run(ctx, job)
	a.then()
	return res, err
}

// broker is a nats-server with JetStream listening on a loopback port,
// which a test restarts on the same port and store.
type broker struct {
	opts      server.Options
	addr, url string
	mu        sync.Mutex
	srv       *server.Server
}

func startBroker(t *testing.T) *broker {
	t.Helper()
	br := &broker{opts: server.Options{Host: "127.0.0.1", Port: -1, StoreDir: t.TempDir()}}
	br.start(t)
	br.addr = br.srv.Addr().String()
	br.url = "nats://" + br.addr
	_, port, err := net.SplitHostPort(br.addr)
	if err != nil {
		t.Fatal(err)
	}
	if br.opts.Port, err = strconv.Atoi(port); err != nil {
		t.Fatal(err)
	}
	return br
}

// start starts the server on br's port and store; it is shut down when the
// test ends, if it still runs.
func (br *broker) start(t *testing.T) {
	t.Helper()
	opts := br.opts
	srv := workertest.Server(t, &opts)
	br.mu.Lock()
	br.srv = srv
	br.mu.Unlock()
}

// restart shuts the server down and starts it again.
func (br *broker) restart(t *testing.T) {
	t.Helper()
	br.mu.Lock()
	br.srv.Shutdown()
	br.srv.WaitForShutdown()
	br.mu.Unlock()
	br.start(t)
}

// connect opens a connection to url that reconnects at once, closed at
// cleanup.
func (br *broker) connect(t *testing.T, url string) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js
}

// createLayout creates the coordinator's streams, host's consumer and buckets.
func (b *bundle) createLayout(t *testing.T) {
	t.Helper()
	ctx := t.Context()
	lay := b.layout()
	if err := lay.Setup(ctx, b.js); err != nil {
		t.Fatal(err)
	}
	if err := lay.EnsureHosts(ctx, b.js, host); err != nil {
		t.Fatal(err)
	}
	var err error
	if b.consumer, err = b.js.Consumer(ctx, b.subj.TasksStream(), b.subj.Consumer(host)); err != nil {
		t.Fatal(err)
	}
}

// resultsOn counts the results stream's messages with message id msgID's
// step, -1 when it cannot tell.
func (b *bundle) resultsOn(ctx context.Context, msgID string) int {
	subject := b.subj.Result("rot-1", 1)
	s, err := b.js.Stream(ctx, b.subj.ResultsStream())
	if err != nil {
		return -1
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(subject))
	if err != nil {
		return -1
	}
	return int(info.State.Subjects[subject])
}

// pending counts the tasks not acknowledged, -1 when it cannot tell.
func (b *bundle) pending(ctx context.Context) int {
	s, err := b.js.Stream(ctx, b.subj.TasksStream())
	if err != nil {
		return -1
	}
	info, err := s.Info(ctx)
	if err != nil {
		return -1
	}
	return int(info.State.Msgs)
}

// link is a TCP proxy between a client and the broker that can lose what
// passes on its open connections, as a broker killed at the wrong moment
// does. A connection made later passes everything.
type link struct {
	ln     net.Listener
	target string
	watch  []byte        // lost is closed once a lost request held this
	lost   chan struct{} // see watch
	once   sync.Once
	mu     sync.Mutex
	conns  []*linkConn
	wg     sync.WaitGroup
}

type linkConn struct {
	client, server         net.Conn
	loseReplies, loseSends atomic.Bool
}

func newLink(t *testing.T, target string, watch []byte) *link {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := &link{ln: ln, target: target, watch: watch, lost: make(chan struct{})}
	l.wg.Add(1)
	go l.accept()
	t.Cleanup(func() {
		_ = ln.Close()
		l.mu.Lock()
		for _, c := range l.conns {
			_ = c.client.Close()
			_ = c.server.Close()
		}
		l.mu.Unlock()
		l.wg.Wait()
	})
	return l
}

func (l *link) addr() string { return l.ln.Addr().String() }

// lose makes the open connections lose what the broker sends and, with
// requests, what the client sends.
func (l *link) lose(requests bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, c := range l.conns {
		c.loseReplies.Store(true)
		c.loseSends.Store(requests)
	}
}

func (l *link) accept() {
	defer l.wg.Done()
	for {
		client, err := l.ln.Accept()
		if err != nil {
			return
		}
		srv, err := net.Dial("tcp", l.target)
		if err != nil { // the broker is down: the client tries again
			_ = client.Close()
			continue
		}
		c := &linkConn{client: client, server: srv}
		l.mu.Lock()
		l.conns = append(l.conns, c)
		l.mu.Unlock()
		l.wg.Add(2)
		go l.pipe(c, client, srv, &c.loseSends, true)
		go l.pipe(c, srv, client, &c.loseReplies, false)
	}
}

// pipe copies from src to dst until either fails, dropping what passes
// while lose holds.
func (l *link) pipe(c *linkConn, src, dst net.Conn, lose *atomic.Bool, sends bool) {
	defer l.wg.Done()
	defer func() {
		_ = c.client.Close()
		_ = c.server.Close()
	}()
	buf := make([]byte, 64<<10)
	var tail []byte // the end of the last chunk, for a watch split between two
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if !lose.Load() {
				if _, err := dst.Write(buf[:n]); err != nil {
					return
				}
			} else if sends {
				seen := append(tail, buf[:n]...)
				if bytes.Contains(seen, l.watch) {
					l.once.Do(func() { close(l.lost) })
				}
				tail = append([]byte(nil), seen[max(0, len(seen)-len(l.watch)):]...)
			}
		}
		if err != nil {
			return
		}
	}
}

func TestStepDeadline(t *testing.T) {
	t.Parallel()
	at := time.Date(2025, 3, 14, 15, 9, 26, 0, time.UTC)
	tk := messages.Task{ExpiresAt: at, Script: messages.Script{TimeoutMS: 5 * 60 * 1000}}
	if got, want := stepDeadline(tk), at.Add(5*time.Minute+30*time.Second); !got.Equal(want) {
		t.Errorf("stepDeadline = %s, want %s", got, want)
	}
	if got := stepDeadline(messages.Task{}); !got.IsZero() {
		t.Errorf("stepDeadline of a task without expiry = %s, want zero", got)
	}
}

// Marking a task reported again after a write whose reply was lost finds
// the marker already reported; a marker another run took over is not
// written, and not retried for long.
func TestReportedAfterLostReply(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name     string
		by       string // the worker whose marker is written meanwhile
		wantWarn bool
	}{
		{"OwnWriteStored", "w1", false},
		{"TakenOver", "w2", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			logs := new(proctest.Buffer)
			log := zerolog.New(logs)
			w, b := setup(t, config{}, func(o *Options) { o.Logger = &log })
			tk := task(1)
			v := w.decide(t.Context(), tk, 1)
			if v.do != runIt {
				t.Fatalf("verdict %+v", v)
			}
			m := v.marker
			m.Worker, m.ReportedAt = tt.by, time.Now()
			data, err := json.Marshal(m)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := b.kv(t, b.subj.StartedBucket()).Update(t.Context(), startedKey(tk.ID), data, v.rev); err != nil {
				t.Fatal(err)
			}
			began := time.Now()
			w.reported(t.Context(), w.log, tk, v)
			if d := time.Since(began); d > 10*time.Second {
				t.Errorf("reported took %s", d)
			}
			if warned := strings.Contains(logs.String(), "task not marked reported"); warned != tt.wantWarn {
				t.Errorf("warned %v, want %v:\n%s", warned, tt.wantWarn, logs)
			}
			if got := b.marker(t, tk.ID); got.Worker != tt.by {
				t.Errorf("marker of %q, want %q's kept", got.Worker, tt.by)
			}
		})
	}
}
