package worker

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/postrotate/postrotate/executor"
	"github.com/postrotate/postrotate/messages"
	"github.com/postrotate/postrotate/messages/layout"
	"github.com/postrotate/postrotate/worker/workertest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// fakeExecutor records the jobs it runs; run decides each job's result.
type fakeExecutor struct {
	mu   sync.Mutex
	jobs []executor.Job
	run  func(ctx context.Context, job executor.Job) (executor.Result, error)
}

func (f *fakeExecutor) Run(ctx context.Context, job executor.Job) (executor.Result, error) {
	f.mu.Lock()
	f.jobs = append(f.jobs, job)
	f.mu.Unlock()
	if f.run != nil {
		return f.run(ctx, job)
	}
	now := time.Now()
	return executor.Result{Command: "/bin/sh " + job.Script.Name, System: messages.SystemLinux, Stdout: "ran " + job.Script.Name,
		StartedAt: now, FinishedAt: now}, nil
}

func (f *fakeExecutor) Jobs() []executor.Job {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]executor.Job(nil), f.jobs...)
}

type bundle struct {
	srv      *server.Server
	js       jetstream.JetStream
	subj     messages.Subjects
	cfg      config
	exec     *fakeExecutor
	results  chan messages.RotationResult
	refused  chan messages.RotationResult // on the refused subjects
	consumer jetstream.Consumer
}

const host = "gw.1 test"

// config shapes setup's JetStream. A zero field means its default.
type config struct {
	// ackWait is the consumer's AckWait and PinnedTTL. Defaults to 30s.
	ackWait time.Duration
	// maxDeliver is the consumer's MaxDeliver. Defaults to 5.
	maxDeliver int
	// workerTTL is the workers bucket's TTL. Defaults to 30s, as the
	// coordinator's layout.
	workerTTL time.Duration
	// noBuckets leaves the KV buckets out, as before a coordinator made them.
	noBuckets bool
}

// setup starts a real in-process JetStream with the task and result streams,
// host's consumer and the KV buckets, and returns a worker for host.
func setup(t *testing.T, cfg config, mod func(*Options)) (*Worker, *bundle) {
	t.Helper()
	cfg.ackWait = cmp.Or(cfg.ackWait, 30*time.Second)
	cfg.maxDeliver = cmp.Or(cfg.maxDeliver, 5)
	cfg.workerTTL = cmp.Or(cfg.workerTTL, 30*time.Second)
	srv := workertest.Server(t, &server.Options{DontListen: true})
	b := &bundle{srv: srv, cfg: cfg, exec: &fakeExecutor{}, results: make(chan messages.RotationResult, 100), refused: make(chan messages.RotationResult, 100)}
	nc, js := b.connect(t)
	b.js = js
	ctx := t.Context()
	lay := b.layout()
	for _, sc := range lay.Streams() {
		if _, err := js.CreateStream(ctx, sc); err != nil {
			t.Fatal(err)
		}
	}
	if err := lay.EnsureHosts(ctx, js, host); err != nil {
		t.Fatal(err)
	}
	var err error
	if b.consumer, err = js.Consumer(ctx, b.subj.TasksStream(), b.subj.Consumer(host)); err != nil {
		t.Fatal(err)
	}
	if !cfg.noBuckets {
		b.createBuckets(t)
	}
	for subject, ch := range map[string]chan messages.RotationResult{b.subj.AllResults(): b.results, b.subj.AllRefused(): b.refused} {
		sub, err := nc.Subscribe(subject, func(m *nats.Msg) {
			rr, err := messages.DecodeResult(m.Data)
			if err != nil {
				t.Errorf("bad result: %v", err)
				return
			}
			ch <- rr
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = sub.Unsubscribe() })
	}

	return b.worker(t, js, b.exec, mod), b
}

// connect opens another connection to the server, closed at cleanup.
func (b *bundle) connect(t *testing.T) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect("", nats.InProcessServer(b.srv))
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

// worker returns a worker "w1" for host that runs local scripts with exec.
func (b *bundle) worker(t *testing.T, js jetstream.JetStream, exec executor.Executor, mod func(*Options)) *Worker {
	t.Helper()
	opts := Options{Host: host, Name: "w1", Executors: map[string]executor.Executor{messages.RunnerLocal: exec}, FetchWait: 200 * time.Millisecond}
	if mod != nil {
		mod(&opts)
	}
	w, err := New(js, opts)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// layout is the coordinator's JetStream layout with the test's limits.
func (b *bundle) layout() layout.Layout {
	return layout.Layout{Subjects: b.subj, AckWait: b.cfg.ackWait, MaxDeliver: b.cfg.maxDeliver, PinnedTTL: b.cfg.ackWait, WorkerTTL: b.cfg.workerTTL}
}

// createBuckets creates the KV buckets of the coordinator's layout as
// nats.go does, with direct gets on (the coordinator turns them off:
// TestStartedBucketDirectGetsTurnedOff does it under a running worker).
func (b *bundle) createBuckets(t *testing.T) {
	t.Helper()
	for _, cfg := range b.layout().Buckets() {
		if _, err := b.js.CreateKeyValue(t.Context(), cfg); err != nil {
			t.Fatal(err)
		}
	}
}

func (b *bundle) kv(t *testing.T, bucket string) jetstream.KeyValue {
	t.Helper()
	kv, err := b.js.KeyValue(t.Context(), bucket)
	if err != nil {
		t.Fatal(err)
	}
	return kv
}

// within bounds every wait of these tests: long enough for a loaded
// machine running three test binaries at once.
const within = 30 * time.Second

// start starts w for the test; it stops gracefully (within 10s) when the
// test ends.
func start(t *testing.T, w *Worker) {
	t.Helper()
	workertest.Start(t, w, 10*time.Second)
}

func task(step int) messages.Task {
	now := time.Now()
	return messages.Task{
		SchemaVersion: messages.SchemaVersion, ID: "rot-1-" + string(rune('0'+step)), RotationID: "rot-1", Step: step,
		Host: host, Runner: messages.RunnerLocal, RecordUID: "svc-user", CreatedAt: now, ExpiresAt: now.Add(time.Minute),
		Script: messages.Script{Name: "s.sh", Title: "Script", Content: []byte("exit 0"), TimeoutMS: 5000},
		Secret: &messages.TaskSecret{Stdin: []byte("e30=\n"), Mask: []string{"S3cret-marker"}},
	}
}

func (b *bundle) publish(t *testing.T, v any) {
	t.Helper()
	data, ok := v.([]byte)
	if !ok {
		var err error
		if data, err = json.Marshal(v); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := b.js.Publish(t.Context(), b.subj.Tasks(host), data); err != nil {
		t.Fatal(err)
	}
}

func (b *bundle) result(t *testing.T) messages.RotationResult {
	t.Helper()
	select {
	case rr := <-b.results:
		return rr
	case <-time.After(30 * time.Second):
		t.Fatal("no result within 30s")
		return messages.RotationResult{}
	}
}

// waitDrained waits until the task stream is empty: every task acked or
// terminated (an ack publishes no event: polled).
func (b *bundle) waitDrained(t *testing.T) {
	t.Helper()
	workertest.Eventually(t, 10*time.Second, "task stream drained", func() bool {
		s, err := b.js.Stream(t.Context(), b.subj.TasksStream())
		if err != nil {
			t.Fatal(err)
		}
		info, err := s.Info(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		return info.State.Msgs == 0
	})
}

func TestRunsTaskAndPublishesResult(t *testing.T) {
	t.Parallel()
	w, b := setup(t, config{}, nil)
	start(t, w)
	b.publish(t, task(1))
	rr := b.result(t)
	if !rr.Success || rr.Error != "" || rr.ExitCode != 0 {
		t.Fatalf("result = %+v, want success", rr)
	}
	if rr.UID != "svc-user" || rr.Title != "Script" || rr.Name != "s.sh" || rr.Host != host || rr.Worker != "w1" ||
		rr.RotationID != "rot-1" || rr.Step != 1 || rr.Attempt != 1 || rr.Stdout != "ran s.sh" || rr.System != "Linux" {
		t.Fatalf("result fields = %+v", rr)
	}
	jobs := b.exec.Jobs()
	if len(jobs) != 1 || string(jobs[0].Stdin) != "e30=\n" || jobs[0].Secrets[0] != "S3cret-marker" || jobs[0].Script.Timeout != 5*time.Second {
		t.Fatalf("job = %+v", jobs)
	}
	b.waitDrained(t)
}

func TestTasksRunInOrder(t *testing.T) {
	t.Parallel()
	w, b := setup(t, config{}, nil)
	for i := 1; i <= 5; i++ {
		b.publish(t, task(i))
	}
	start(t, w)
	for i := 1; i <= 5; i++ {
		if rr := b.result(t); rr.Step != i {
			t.Fatalf("result %d is step %d", i, rr.Step)
		}
	}
	for i, j := range b.exec.Jobs() {
		if j.Step != i+1 {
			t.Fatalf("job %d ran step %d", i, j.Step)
		}
	}
}

func TestExitCodeAndErrorAreResults(t *testing.T) {
	t.Parallel()
	w, b := setup(t, config{}, nil)
	b.exec.run = func(context.Context, executor.Job) (executor.Result, error) {
		return executor.Result{ExitCode: -1, Error: "timed out"}, errors.New("exec: S3cret-marker not found")
	}
	start(t, w)
	b.publish(t, task(1))
	rr := b.result(t)
	if rr.Success || rr.Error != "timed out" {
		t.Fatalf("result = %+v", rr)
	}
	b.exec.run = func(context.Context, executor.Job) (executor.Result, error) {
		return executor.Result{ExitCode: -1}, errors.New("start interpreter for S3cret-marker")
	}
	b.publish(t, task(2))
	rr = b.result(t)
	if rr.Success || rr.Error != "start interpreter for ********" {
		t.Fatalf("a run error must be reported masked, got %+v", rr)
	}
}

func TestRefusals(t *testing.T) {
	t.Parallel()
	expired := task(1)
	expired.ExpiresAt = time.Now().Add(-time.Second)
	other := task(2)
	other.Host = "another-host"
	runner := task(3)
	runner.Runner = messages.RunnerWinRM
	runner.Connection = &messages.Connection{Protocol: "winrm", Host: "win-1", Port: 5985}
	runner.Secret.Credential = &messages.Credential{Login: "admin", Password: "S3cret-marker"}
	w, b := setup(t, config{}, nil)
	start(t, w)
	for _, tt := range []struct {
		task messages.Task
		want string
	}{
		{expired, "refused: task expired"},
		{other, `refused: task is for host "another-host"`},
		{runner, `refused: this worker has no "winrm" runner`},
	} {
		b.publish(t, tt.task)
		rr := b.result(t)
		if rr.Success || rr.Step != tt.task.Step || len(rr.Error) < len(tt.want) || rr.Error[:len(tt.want)] != tt.want {
			t.Errorf("step %d: result = %+v, want error %q", tt.task.Step, rr, tt.want)
		}
	}
	if n := len(b.exec.Jobs()); n != 0 {
		t.Fatalf("refused tasks ran %d scripts", n)
	}
	b.waitDrained(t)
}

func TestUndecodableTaskIsTerminatedAndReported(t *testing.T) {
	t.Parallel()
	w, b := setup(t, config{}, nil)
	start(t, w)
	b.publish(t, []byte("not a task at all"))
	// Readable rotation and step, but invalid: a refusal result is published.
	b.publish(t, []byte(`{"schema_version":1,"rotation_id":"rot-9","step":4,"host":"x"}`))
	rr := b.result(t)
	if rr.RotationID != "rot-9" || rr.Step != 4 || rr.Success || rr.Error == "" {
		t.Fatalf("result = %+v", rr)
	}
	b.waitDrained(t)
	if n := len(b.exec.Jobs()); n != 0 {
		t.Fatalf("invalid tasks ran %d scripts", n)
	}
}

// A first delivery that is never acknowledged and wrote no started marker
// (a worker that died before starting the script): the redelivered task
// runs, once.
func TestRedeliveredTaskWithoutMarkerRunsOnce(t *testing.T) {
	t.Parallel()
	w, b := setup(t, config{ackWait: time.Second}, nil)
	b.publish(t, task(1))
	msgs, err := b.consumer.Fetch(1, jetstream.FetchMaxWait(5*time.Second), jetstream.FetchPriorityGroup(messages.PriorityGroup))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for range msgs.Messages() {
		n++
	}
	if n != 1 {
		t.Fatalf("first delivery: %d messages", n)
	}
	start(t, w)
	rr := b.result(t)
	if !rr.Success || rr.Attempt != 2 || rr.Worker != "w1" {
		t.Fatalf("redelivered task: result %+v", rr)
	}
	b.waitDrained(t)
	if n := len(b.exec.Jobs()); n != 1 {
		t.Fatalf("script ran %d times", n)
	}
	m := b.marker(t, task(1).ID)
	if m.Worker != "w1" || m.Host != host || m.Attempt != 2 || m.StartedAt.IsZero() || m.ReportedAt.IsZero() {
		t.Fatalf("marker = %+v", m)
	}
}

func TestInProgressKeepsLongScriptFromRedelivery(t *testing.T) {
	t.Parallel()
	w, b := setup(t, config{ackWait: time.Second}, nil)
	b.exec.run = func(ctx context.Context, job executor.Job) (executor.Result, error) {
		select {
		case <-time.After(3 * time.Second): // three AckWaits
		case <-ctx.Done():
		}
		return executor.Result{}, nil
	}
	start(t, w)
	b.publish(t, task(1))
	rr := b.result(t)
	if !rr.Success || rr.Attempt != 1 {
		t.Fatalf("result = %+v", rr)
	}
	b.waitDrained(t)
	if n := len(b.exec.Jobs()); n != 1 {
		t.Fatalf("script ran %d times", n)
	}
}

func TestGracefulStopFinishesRunningScript(t *testing.T) {
	t.Parallel()
	w, b := setup(t, config{}, nil)
	running := make(chan struct{})
	release := make(chan struct{})
	b.exec.run = func(ctx context.Context, job executor.Job) (executor.Result, error) {
		close(running)
		<-release
		return executor.Result{Stdout: "finished"}, ctx.Err()
	}
	if err := w.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	b.waitRegistered(t, "w1")
	b.publish(t, task(1))
	<-running
	stopped := make(chan error)
	go func() { stopped <- w.Stop(context.Background()) }()
	select {
	case <-stopped:
		t.Fatal("Stop returned while the script was running")
	case <-time.After(200 * time.Millisecond):
	}
	// Still registered while the script runs.
	if _, err := b.kv(t, b.subj.WorkersBucket()).Get(t.Context(), messages.WorkerKey(host, "w1")); err != nil {
		t.Fatalf("registration while stopping: %v", err)
	}
	close(release)
	if err := <-stopped; err != nil {
		t.Fatal(err)
	}
	// Reported before Stop returned, and deregistered.
	s, err := b.js.Stream(t.Context(), b.subj.ResultsStream())
	if err != nil {
		t.Fatal(err)
	}
	stored, err := s.GetLastMsgForSubject(t.Context(), b.subj.Result("rot-1", 1))
	if err != nil {
		t.Fatalf("result not stored when Stop returned: %v", err)
	}
	if rr, err := messages.DecodeResult(stored.Data); err != nil || !rr.Success || rr.Stdout != "finished" {
		t.Fatalf("result = %+v, %v", rr, err)
	}
	if _, err := b.kv(t, b.subj.WorkersBucket()).Get(t.Context(), messages.WorkerKey(host, "w1")); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatalf("registration after Stop: %v, want key not found", err)
	}
	if err := w.Stop(context.Background()); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
}

func TestHardStopCancelsRunningScript(t *testing.T) {
	t.Parallel()
	w, b := setup(t, config{}, nil)
	running := make(chan struct{})
	b.exec.run = func(ctx context.Context, job executor.Job) (executor.Result, error) {
		close(running)
		<-ctx.Done()
		return executor.Result{ExitCode: -1, Error: "canceled"}, ctx.Err()
	}
	if err := w.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	b.publish(t, task(1))
	<-running
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := w.Stop(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Stop = %v, want deadline exceeded", err)
	}
}

func TestNewRequiresHost(t *testing.T) {
	t.Parallel()
	if _, err := New(nil, Options{}); !errors.Is(err, ErrNoHost) {
		t.Fatalf("err = %v", err)
	}
}

// pinned returns the id of the client host's consumer is pinned to, "" if
// none.
func (b *bundle) pinned(t *testing.T) string {
	t.Helper()
	info, err := b.consumer.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range info.PriorityGroups {
		if g.Group == messages.PriorityGroup {
			return g.PinnedClientID
		}
	}
	return ""
}

// A worker that stops gracefully unpins its host's consumer: the next
// worker of the host gets the next task at once, not after the consumer's
// PinnedTTL (30s here).
func TestGracefulStopUnpins(t *testing.T) {
	t.Parallel()
	w, b := setup(t, config{}, nil)
	start(t, w)
	b.publish(t, task(1))
	if rr := b.result(t); !rr.Success || rr.Worker != "w1" {
		t.Fatalf("first task: %+v", rr)
	}
	if b.pinned(t) == "" {
		t.Fatal("the consumer is not pinned to the worker that took a task")
	}
	if err := w.Stop(t.Context()); err != nil {
		t.Fatal(err)
	}
	if id := b.pinned(t); id != "" {
		t.Fatalf("consumer still pinned to %q after the worker stopped", id)
	}

	_, js := b.connect(t)
	w2 := b.worker(t, js, b.exec, func(o *Options) { o.Name = "w2" })
	start(t, w2)
	b.publish(t, task(2))
	if rr := b.result(t); !rr.Success || rr.Worker != "w2" {
		t.Fatalf("second task: %+v, want run by w2", rr)
	}
}
