package broker_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"
	"github.com/rs/zerolog"
	"go.uber.org/goleak"

	"github.com/postrotate/postrotate/coordinator/broker"
	"github.com/postrotate/postrotate/coordinator/broker/brokertest"
	"github.com/postrotate/postrotate/messages"
	"github.com/postrotate/postrotate/messages/envelope"
	"github.com/postrotate/postrotate/messages/layout"
	"github.com/postrotate/postrotate/worker/natsconn"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// enrolled is a worker's credentials and its user.
type enrolled struct {
	creds envelope.Credentials
	user  broker.User
}

func enroll(t *testing.T, coord *envelope.Coordinator, subj messages.Subjects, host string) enrolled {
	t.Helper()
	user, _ := nkeys.CreateUser()
	curve, _ := nkeys.CreateCurveKeys()
	us, _ := user.Seed()
	cs, _ := curve.Seed()
	pub, _ := user.PublicKey()
	sign, sender := coord.PublicKeys()
	p := broker.WorkerPermissions(subj, host)
	return enrolled{
		creds: envelope.Credentials{Host: host, UserSeed: string(us), CurveSeed: string(cs), CoordinatorSigningKey: sign,
			CoordinatorCurveKey: sender, InboxPrefix: envelope.InboxPrefix(host), Prefix: subj.Prefix},
		user: broker.User{NKey: pub, Name: "worker " + host, Permissions: &p},
	}
}

type authFixture struct {
	b       *broker.Broker
	subj    messages.Subjects
	coordKP nkeys.KeyPair
	coord   broker.User
	js      jetstream.JetStream // the coordinator's
	a, b2   enrolled
}

// setupAuth starts a broker whose users are the coordinator and two
// workers, hosts "gw-a" and "gw b", with the layout and both consumers.
func setupAuth(t *testing.T) *authFixture {
	t.Helper()
	f := &authFixture{subj: messages.Subjects{Prefix: "pr"}}
	f.coordKP, _ = nkeys.CreateUser()
	pub, _ := f.coordKP.PublicKey()
	f.coord = broker.User{NKey: pub, Name: "coordinator"}
	ident, err := envelope.NewCoordinator()
	if err != nil {
		t.Fatal(err)
	}
	f.a = enroll(t, ident, f.subj, "gw-a")
	f.b2 = enroll(t, ident, f.subj, "gw b")
	f.b, err = broker.Start(broker.Options{StoreDir: t.TempDir(), Listen: "127.0.0.1:0", Users: []broker.User{f.coord, f.a.user, f.b2.user}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.b.Shutdown)
	opt, err := broker.UserOption(f.coordKP)
	if err != nil {
		t.Fatal(err)
	}
	nc, err := f.b.Connect(opt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	if f.js, err = jetstream.New(nc); err != nil {
		t.Fatal(err)
	}
	layout := layout.Layout{Subjects: f.subj}
	if err := layout.Setup(t.Context(), f.js); err != nil {
		t.Fatal(err)
	}
	if err := layout.EnsureHosts(t.Context(), f.js, "gw-a", "gw b"); err != nil {
		t.Fatal(err)
	}
	return f
}

// connect connects as the worker of e over TCP, as postrotate-worker does.
func (f *authFixture) connect(t *testing.T, e enrolled) (*nats.Conn, jetstream.JetStream, *brokertest.Logs) {
	t.Helper()
	logs := brokertest.NewLogs()
	logger := zerolog.New(logs)
	opts, err := natsconn.Options(natsconn.Config{Host: e.creds.Host, Creds: &e.creds, Logger: &logger})
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(f.b.ClientURL(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js, logs
}

// The embedded server admits only its users, and without users refuses
// nothing.
func TestUnknownClientsAreRefused(t *testing.T) {
	t.Parallel()
	f := setupAuth(t)
	if nc, err := nats.Connect(f.b.ClientURL()); err == nil {
		nc.Close()
		t.Fatal("a client without credentials connected")
	} else if !errors.Is(err, nats.ErrAuthorization) {
		t.Fatalf("anonymous client: %v, want an authorization error", err)
	}
	stranger, _ := nkeys.CreateUser()
	opt, _ := broker.UserOption(stranger)
	if nc, err := nats.Connect(f.b.ClientURL(), opt); err == nil {
		nc.Close()
		t.Fatal("an unknown nkey user connected")
	}
}

// A worker's user may do what the worker library does for its own host.
func TestWorkerMayRunItsOwnHost(t *testing.T) {
	t.Parallel()
	f := setupAuth(t)
	ctx := t.Context()
	_, jsA, logs := f.connect(t, f.a)
	if _, err := f.js.Publish(ctx, f.subj.Tasks("gw-a"), []byte("task for a")); err != nil {
		t.Fatal(err)
	}
	pullOwnTask(t, f, jsA)
	// Results and refusals.
	if _, err := jsA.Publish(ctx, f.subj.Result("r1", 1), []byte("{}"), jetstream.WithMsgID("result-r1-1")); err != nil {
		t.Fatalf("publish result: %v", err)
	}
	if _, err := jsA.Publish(ctx, f.subj.Refused("gw-a"), []byte("{}")); err != nil {
		t.Fatalf("publish refusal: %v", err)
	}
	heartbeatOwnHost(t, f, jsA)
	writeStartedMarkers(t, f, jsA)
	if vs := logs.Violations(); len(vs) > 0 {
		t.Errorf("permission violations in the worker's own flow: %v", vs)
	}
}

// pullOwnTask binds gw-a's consumer as its worker (jsA), pulls the task
// waiting there (in the priority group) and acks it.
func pullOwnTask(t *testing.T, f *authFixture, jsA jetstream.JetStream) {
	t.Helper()
	ctx := t.Context()
	cons, err := jsA.Consumer(ctx, f.subj.TasksStream(), f.subj.Consumer("gw-a"))
	if err != nil {
		t.Fatalf("bind own consumer: %v", err)
	}
	batch, err := cons.Fetch(1, jetstream.FetchMaxWait(5*time.Second), jetstream.FetchPriorityGroup(messages.PriorityGroup))
	if err != nil {
		t.Fatalf("pull: %v", err)
	}
	var got []jetstream.Msg
	for m := range batch.Messages() {
		got = append(got, m)
	}
	if batch.Error() != nil || len(got) != 1 || string(got[0].Data()) != "task for a" {
		t.Fatalf("pulled %d messages, %v", len(got), batch.Error())
	}
	if err := got[0].InProgress(); err != nil {
		t.Fatal(err)
	}
	if err := got[0].DoubleAck(ctx); err != nil {
		t.Fatalf("ack: %v", err)
	}
}

// heartbeatOwnHost registers and deregisters a worker of gw-a as its
// worker (jsA) does.
func heartbeatOwnHost(t *testing.T, f *authFixture, jsA jetstream.JetStream) {
	t.Helper()
	ctx := t.Context()
	workers, err := jsA.KeyValue(ctx, f.subj.WorkersBucket())
	if err != nil {
		t.Fatalf("open workers bucket: %v", err)
	}
	if _, err := workers.Status(ctx); err != nil {
		t.Fatalf("workers bucket status: %v", err)
	}
	if _, err := workers.Put(ctx, messages.WorkerKey("gw-a", "w1"), []byte("{}")); err != nil {
		t.Fatalf("heartbeat: %v", err)
	}
	if err := workers.Delete(ctx, messages.WorkerKey("gw-a", "w1")); err != nil {
		t.Fatalf("deregister: %v", err)
	}
}

// writeStartedMarkers creates, reads and updates started markers as a
// worker (jsA) does.
func writeStartedMarkers(t *testing.T, f *authFixture, jsA jetstream.JetStream) {
	t.Helper()
	ctx := t.Context()
	started, err := jsA.KeyValue(ctx, f.subj.StartedBucket())
	if err != nil {
		t.Fatalf("open started bucket: %v", err)
	}
	rev, err := started.Create(ctx, "r1-1", []byte("m"))
	if err != nil {
		t.Fatalf("create marker: %v", err)
	}
	if _, err := started.Create(ctx, "r1-1", []byte("m")); !errors.Is(err, jetstream.ErrKeyExists) {
		t.Fatalf("second create: %v", err)
	}
	if e, err := started.Get(ctx, "r1-1"); err != nil || string(e.Value()) != "m" {
		t.Fatalf("read marker: %v", err)
	}
	if _, err := started.Update(ctx, "r1-1", []byte("m2"), rev); err != nil {
		t.Fatalf("update marker: %v", err)
	}
	if _, err := started.Create(ctx, "seen.r1-1", []byte("7")); err != nil {
		t.Fatalf("first seen: %v", err)
	}
}

// A worker's user may not touch another host's tasks, publish tasks, read
// results or use another inbox; each attempt is logged as a violation.
func TestWorkerMayNotTouchOtherHosts(t *testing.T) {
	t.Parallel()
	f := setupAuth(t)
	if _, err := f.js.Publish(t.Context(), f.subj.Tasks("gw b"), []byte("task for b")); err != nil {
		t.Fatal(err)
	}
	ncA, jsA, logs := f.connect(t, f.a)
	x := trespass{f: f, nc: ncA, js: jsA, logs: logs, stream: f.subj.TasksStream(), consB: f.subj.Consumer("gw b")}
	t.Run("bind the consumer of another host", x.bindOtherConsumer)
	t.Run("pull the tasks of another host", x.pullOtherTasks)
	t.Run("publish a task", x.publishTask)
	t.Run("subscribe to results", x.subscribeResults)
	t.Run("read results from the stream", x.readResults)
	t.Run("another host's registration", x.registerOtherHost)
	t.Run("another host's refusals", x.refuseForOtherHost)
	t.Run("another worker's inbox", x.subscribeOtherInbox)
	t.Run("the records and runs buckets", x.readRunsBucket)
}

// trespass is the worker of gw-a (nc, js, its logs) trying what only the
// coordinator or the worker of "gw b" (consumer consB on the tasks
// stream) may do.
type trespass struct {
	f             *authFixture
	nc            *nats.Conn
	js            jetstream.JetStream
	logs          *brokertest.Logs
	stream, consB string
}

func (x trespass) bindOtherConsumer(t *testing.T) {
	short, cancel := contextWithTimeout(t, time.Second)
	defer cancel()
	if _, err := x.js.Consumer(short, x.stream, x.consB); err == nil {
		t.Fatal("bound the consumer of host gw b")
	}
	x.logs.WaitViolation(t, "$JS.API.CONSUMER.INFO."+x.stream+"."+x.consB)
}

func (x trespass) pullOtherTasks(t *testing.T) {
	subject := "$JS.API.CONSUMER.MSG.NEXT." + x.stream + "." + x.consB
	if _, err := x.nc.Request(subject, []byte(`{"batch":1,"expires":1000000000}`), time.Second); err == nil {
		t.Fatal("pulled from host gw b's consumer")
	}
	x.logs.WaitViolation(t, subject)
	if x.nc.LastError() == nil || !errors.Is(x.nc.LastError(), nats.ErrPermissionViolation) {
		t.Fatalf("last error %v, want a permission violation", x.nc.LastError())
	}
	// The task of gw b is still there, for its own worker.
	info, err := x.f.js.Stream(t.Context(), x.stream)
	if err != nil || info.CachedInfo().State.Msgs != 1 {
		t.Fatalf("tasks stream: %v", err)
	}
}

func (x trespass) publishTask(t *testing.T) {
	subject := x.f.subj.Tasks("gw b")
	if err := x.nc.Publish(subject, []byte("forged")); err != nil {
		t.Fatal(err)
	}
	x.logs.WaitViolation(t, subject)
	info, err := x.f.js.Stream(t.Context(), x.stream)
	if err != nil || info.CachedInfo().State.Msgs != 1 {
		t.Fatalf("a forged task reached the stream: %v", err)
	}
}

func (x trespass) subscribeResults(t *testing.T) {
	if _, err := x.nc.SubscribeSync(x.f.subj.AllResults()); err != nil {
		t.Fatal(err)
	}
	x.logs.WaitViolation(t, x.f.subj.AllResults())
}

func (x trespass) readResults(t *testing.T) {
	short, cancel := contextWithTimeout(t, time.Second)
	defer cancel()
	if _, err := x.js.Stream(short, x.f.subj.ResultsStream()); err == nil {
		t.Fatal("read the results stream's info")
	}
	x.logs.WaitViolation(t, "$JS.API.STREAM.INFO."+x.f.subj.ResultsStream())
	short2, cancel2 := contextWithTimeout(t, time.Second)
	defer cancel2()
	if _, err := x.js.OrderedConsumer(short2, x.f.subj.ResultsStream(), jetstream.OrderedConsumerConfig{}); err == nil {
		t.Fatal("created a consumer on the results stream")
	}
}

func (x trespass) registerOtherHost(t *testing.T) {
	subject := "$KV." + x.f.subj.WorkersBucket() + "." + messages.WorkerKey("gw b", "w1")
	if err := x.nc.Publish(subject, []byte("{}")); err != nil {
		t.Fatal(err)
	}
	x.logs.WaitViolation(t, subject)
}

func (x trespass) refuseForOtherHost(t *testing.T) {
	subject := x.f.subj.Refused("gw b")
	if err := x.nc.Publish(subject, []byte("{}")); err != nil {
		t.Fatal(err)
	}
	x.logs.WaitViolation(t, subject)
}

func (x trespass) subscribeOtherInbox(t *testing.T) {
	subject := envelope.InboxPrefix("gw b") + ".>"
	if _, err := x.nc.SubscribeSync(subject); err != nil {
		t.Fatal(err)
	}
	x.logs.WaitViolation(t, subject)
}

func (x trespass) readRunsBucket(t *testing.T) {
	subject := "$JS.API.STREAM.INFO.KV_" + x.f.subj.RunsBucket()
	if _, err := x.nc.Request(subject, nil, time.Second); err == nil {
		t.Fatal("read the runs bucket")
	}
	x.logs.WaitViolation(t, subject)
}

// SetUsers admits a new user at once and shuts a removed one out,
// disconnecting its open connection.
func TestSetUsers(t *testing.T) {
	t.Parallel()
	f := setupAuth(t)
	if err := f.b.SetUsers([]broker.User{f.coord}); err != nil {
		t.Fatal(err)
	}
	optsA, _ := natsconn.Options(natsconn.Config{Host: "gw-a", Creds: &f.a.creds})
	if nc, err := nats.Connect(f.b.ClientURL(), optsA...); err == nil {
		nc.Close()
		t.Fatal("a removed user connected")
	}
	if err := f.b.SetUsers([]broker.User{f.coord, f.a.user}); err != nil {
		t.Fatal(err)
	}
	closed := make(chan struct{})
	opts := append(optsA, nats.NoReconnect(), nats.ClosedHandler(func(*nats.Conn) { close(closed) }))
	nc, err := nats.Connect(f.b.ClientURL(), opts...)
	if err != nil {
		t.Fatalf("a new user: %v", err)
	}
	defer nc.Close()
	// The coordinator's own connection survives every reload.
	if _, err := f.js.AccountInfo(t.Context()); err != nil {
		t.Fatalf("coordinator after reload: %v", err)
	}
	// Re-enrolled: the host's old user is out, its connection closed.
	ident, _ := envelope.NewCoordinator()
	a2 := enroll(t, ident, f.subj, "gw-a")
	if err := f.b.SetUsers([]broker.User{f.coord, a2.user}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("the old user's connection stayed open")
	}
	if nc, err := nats.Connect(f.b.ClientURL(), optsA...); err == nil {
		nc.Close()
		t.Fatal("the old user connected after re-enrolment")
	}
	opts2, _ := natsconn.Options(natsconn.Config{Host: "gw-a", Creds: &a2.creds})
	nc2, err := nats.Connect(f.b.ClientURL(), opts2...)
	if err != nil {
		t.Fatalf("the new user: %v", err)
	}
	nc2.Close()

	if err := f.b.SetUsers(nil); err == nil {
		t.Fatal("SetUsers accepted no users")
	}
	if err := f.b.SetUsers([]broker.User{f.coord, {NKey: "nope"}}); err == nil {
		t.Fatal("SetUsers accepted a bad key")
	}
	open, err := broker.Start(broker.Options{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer open.Shutdown()
	if err := open.SetUsers([]broker.User{f.coord}); !errors.Is(err, broker.ErrNoAuth) {
		t.Fatalf("SetUsers on a server without users: %v", err)
	}
}

// Config renders the users as a nats-server configuration that the server
// parses into the same users and permissions.
func TestConfig(t *testing.T) {
	t.Parallel()
	subj := messages.Subjects{}
	ident, _ := envelope.NewCoordinator()
	coord, _ := nkeys.CreateUser()
	pub, _ := coord.PublicKey()
	a := enroll(t, ident, subj, "gateway-1")
	b := enroll(t, ident, subj, "web 01\n# injected")
	conf := broker.Config([]broker.User{{NKey: pub, Name: "coordinator"}, a.user, b.user})
	path := filepath.Join(t.TempDir(), "auth.conf")
	if err := os.WriteFile(path, []byte("port: -1\njetstream: enabled\n"+conf), 0o600); err != nil {
		t.Fatal(err)
	}
	opts, err := server.ProcessConfigFile(path)
	if err != nil {
		t.Fatalf("nats-server refuses the configuration: %v\n%s", err, conf)
	}
	if len(opts.Nkeys) != 3 {
		t.Fatalf("%d users parsed\n%s", len(opts.Nkeys), conf)
	}
	if opts.Nkeys[0].Nkey != pub || opts.Nkeys[0].Permissions != nil {
		t.Fatalf("coordinator %+v", opts.Nkeys[0])
	}
	for i, e := range []enrolled{a, b} {
		got := opts.Nkeys[i+1]
		if got.Nkey != e.user.NKey || got.Permissions == nil ||
			!reflect.DeepEqual(got.Permissions.Publish.Allow, e.user.Permissions.Publish) ||
			!reflect.DeepEqual(got.Permissions.Subscribe.Allow, e.user.Permissions.Subscribe) {
			t.Errorf("user %d: %+v, want %+v\n%s", i+1, got, e.user, conf)
		}
	}
	if !strings.Contains(conf, `"$JS.API.CONSUMER.MSG.NEXT.POSTROTATE_TASKS.host_gateway-1"`) {
		t.Errorf("the configuration lacks the pull subject:\n%s", conf)
	}
}

func contextWithTimeout(t *testing.T, d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(t.Context(), d)
}
