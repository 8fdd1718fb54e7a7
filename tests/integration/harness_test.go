package integration

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"
	mobynet "github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/testcontainers/testcontainers-go"
	tcexec "github.com/testcontainers/testcontainers-go/exec"
	tclog "github.com/testcontainers/testcontainers-go/log"
	"github.com/testcontainers/testcontainers-go/network"
	"github.com/testcontainers/testcontainers-go/wait"

	"github.com/postrotate/postrotate/coordinator/rotation"
	"github.com/postrotate/postrotate/coordinator/runs"
	"github.com/postrotate/postrotate/messages"
	"github.com/postrotate/postrotate/worker/workertest"
)

// TestMain silences testcontainers' own log (a dozen lines per container):
// `go test -v` then shows each test's steps and time; a failing test prints
// the logs of its containers.
func TestMain(m *testing.M) {
	tclog.SetDefault(tclog.NewNoopLogger())
	os.Exit(m.Run())
}

// The images `make images` builds.
const (
	imageServe   = "postrotate/postrotate:dev"
	imageWorker  = "postrotate/postrotate-worker:dev"
	imageNATS    = "postrotate/nats-server:dev"
	imageMachine = "postrotate/postrotate-machine:dev"
)

// composeDir holds the inventory and scripts docker-compose.yml uses; the
// tests deploy the same ones.
const composeDir = "../../deploy/compose"

var natsURLs = "nats://nats-1:4222,nats://nats-2:4222,nats://nats-3:4222"

// deployment is a running scaled-out postrotate, as docker-compose.yml
// lays it out.
type deployment struct {
	t      *testing.T
	docker client.APIClient
	net    *testcontainers.DockerNetwork
	nats   map[string]testcontainers.Container // nats-1..3
	serve  testcontainers.Container
	// gateways are the two workers of the host gateway-1.
	gateways map[string]testcontainers.Container // gateway-1a, gateway-1b
	web01    testcontainers.Container
	ssh01    testcontainers.Container

	api   string // serve's API, http://127.0.0.1:PORT
	token string

	// js is the test's own client of the NATS cluster, through the client
	// ports the nodes publish on the host: the tests wait on what the
	// deployment publishes there (rotation events, results, worker
	// registrations) instead of polling the API.
	js   jetstream.JetStream
	subj messages.Subjects

	mu     sync.Mutex
	finals map[string]chan struct{} // closed by the rotation's completed or failed event
	ended  map[string]bool          // rotations whose channel is closed
}

// requireDocker skips the test, saying what is missing, unless a Docker
// engine answers and has every image. It returns the engine's client.
func requireDocker(t *testing.T) client.APIClient {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	p, err := testcontainers.NewDockerProvider()
	if err != nil {
		t.Skip("no Docker engine reachable")
	}
	t.Cleanup(func() { _ = p.Close() })
	if err := p.Health(ctx); err != nil {
		t.Skip("no Docker engine reachable")
	}
	for _, img := range []string{imageServe, imageWorker, imageNATS, imageMachine} {
		if _, err := p.Client().ImageInspect(ctx, img); err != nil {
			t.Skipf("image %s missing: run make images", img)
		}
	}
	return p.Client()
}

// setup starts the whole deployment on a private network and enrols the
// workers, as docker-compose.yml does. Everything is removed when the test
// ends.
func setup(t *testing.T) *deployment {
	t.Helper()
	return setupWith(t, options{})
}

// options change what setupWith deploys; the zero value is
// docker-compose.yml's deployment.
type options struct {
	// inventory is the inventory serve loads (default: deploy/compose's).
	// Its scripts are those of deploy/compose/scripts and
	// testdata/scripts, under scripts/.
	inventory string
	// webUsers and sshUsers are more Linux users to create on web-01 and
	// ssh-01, each with the password of userPassword.
	webUsers, sshUsers []string
}

// userPassword is the initial password of a user of options.webUsers or
// options.sshUsers.
func userPassword(user string) string { return "Pw-" + user + "-compose-1" }

func machineUsers(base string, more []string) string {
	for _, u := range more {
		base += " " + u + ":" + userPassword(u)
	}
	return base
}

// setupWith is setup with options.
func setupWith(t *testing.T, o options) *deployment {
	t.Helper()
	if o.inventory == "" {
		o.inventory = composeDir + "/inventory.yaml"
	}
	docker := requireDocker(t)
	ctx := t.Context()
	d := &deployment{t: t, docker: docker, nats: map[string]testcontainers.Container{}, gateways: map[string]testcontainers.Container{},
		finals: map[string]chan struct{}{}, ended: map[string]bool{}}

	// The credentials volume the enrolment writes and the workers read;
	// removed last, once no container uses it.
	creds := "postrotate-it-creds-" + randomHex(t, 6)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := docker.VolumeRemove(ctx, creds, client.VolumeRemoveOptions{Force: true}); err != nil && !strings.Contains(err.Error(), "No such volume") {
			t.Errorf("remove volume %s: %v", creds, err)
		}
	})

	nw, err := network.New(ctx)
	testcontainers.CleanupNetwork(t, nw)
	if err != nil {
		t.Fatalf("create network: %v", err)
	}
	d.net = nw

	// Each node's client port is published on the host, for the test's
	// own client.
	var hostURLs []string
	for i := 1; i <= 3; i++ {
		name := fmt.Sprintf("nats-%d", i)
		port := freePort(t)
		hostURLs = append(hostURLs, "nats://127.0.0.1:"+strconv.Itoa(port))
		d.nats[name] = d.run(name, imageNATS,
			testcontainers.WithCmd("--server_name="+name, "--jetstream", "--store_dir=/data",
				"--cluster_name=postrotate", "--cluster=nats://0.0.0.0:6222",
				"--routes=nats://nats-1:6222,nats://nats-2:6222,nats://nats-3:6222", "--http_port=8222"),
			testcontainers.WithExposedPorts("4222/tcp"),
			testcontainers.WithHostConfigModifier(func(hc *container.HostConfig) {
				hc.PortBindings = mobynet.PortMap{mobynet.MustParsePort("4222/tcp"): {{HostIP: netip.MustParseAddr("127.0.0.1"), HostPort: strconv.Itoa(port)}}}
			}),
			testcontainers.WithWaitStrategy(wait.ForLog("Server is ready").WithStartupTimeout(time.Minute)),
		)
	}

	// ssh-01 first: serve reads its host key (the inventory's known_hosts).
	d.ssh01 = d.run("ssh-01", imageMachine,
		testcontainers.WithEnv(map[string]string{
			"MACHINE_USERS":       machineUsers("admin:Admin-compose-demo-1:sudo deploy:Deploy-compose-demo-1", o.sshUsers),
			"MACHINE_SSHD":        "1",
			"MACHINE_KNOWN_HOSTS": "/hostkeys/known_hosts",
		}),
		withInit(),
		testcontainers.WithWaitStrategy(wait.ForExec([]string{"sh", "-c", "test -s /hostkeys/known_hosts && pgrep -x sshd"}).WithStartupTimeout(time.Minute)),
	)
	knownHosts := d.exec(d.ssh01, "cat", "/hostkeys/known_hosts")

	d.token = randomHex(t, 24)
	port := freePort(t)
	d.api = "http://127.0.0.1:" + strconv.Itoa(port)
	d.serve = d.run("serve", imageServe,
		testcontainers.WithCmd("serve",
			"--inventory=/inventory/inventory.yaml",
			"--data=/data",
			"--http=0.0.0.0:7480",
			"--nats="+natsURLs,
			"--replicas=3"),
		testcontainers.WithEnv(map[string]string{"POSTROTATE_API_TOKEN": d.token}),
		testcontainers.WithFiles(append(scriptFiles(t),
			testcontainers.ContainerFile{HostFilePath: o.inventory, ContainerFilePath: "/inventory/inventory.yaml", FileMode: 0o644},
			testcontainers.ContainerFile{Reader: strings.NewReader(knownHosts), ContainerFilePath: "/hostkeys/known_hosts", FileMode: 0o644},
		)...),
		testcontainers.WithExposedPorts("7480/tcp"),
		testcontainers.WithHostConfigModifier(func(hc *container.HostConfig) {
			hc.PortBindings = mobynet.PortMap{mobynet.MustParsePort("7480/tcp"): {{HostIP: netip.MustParseAddr("127.0.0.1"), HostPort: strconv.Itoa(port)}}}
			// The first start fails while the cluster elects its
			// JetStream leader, as in docker-compose.yml.
			hc.RestartPolicy = container.RestartPolicy{Name: container.RestartPolicyOnFailure}
		}),
	)
	d.waitHealthy(2 * time.Minute)
	// serve has laid out the streams and buckets.
	d.connect(hostURLs)
	d.watchRotations()

	// The enrolment, as compose's "enrol" job: deploy/compose/enrol.sh.
	enrol := d.run("enrol", imageMachine,
		testcontainers.WithCmd("bash", "/compose/enrol.sh"),
		testcontainers.WithEnv(map[string]string{
			"POSTROTATE_SERVER": "http://serve:7480",
			"ENROL_HOSTS":       "gateway-1:65532 web-01:0",
		}),
		testcontainers.WithFiles(
			testcontainers.ContainerFile{HostFilePath: composeDir + "/enrol.sh", ContainerFilePath: "/compose/enrol.sh", FileMode: 0o755},
			testcontainers.ContainerFile{Reader: strings.NewReader(d.token), ContainerFilePath: "/secrets/api.token", FileMode: 0o600},
		),
		testcontainers.WithMounts(testcontainers.VolumeMount(creds, "/creds")),
		testcontainers.WithWaitStrategy(wait.ForExit().WithExitTimeout(time.Minute)),
	)
	if st, err := enrol.State(ctx); err != nil || st.ExitCode != 0 {
		d.dumpLogs(enrol)
		t.Fatalf("enrolment failed: state %+v, %v", st, err)
	}

	credsRO := testcontainers.ContainerMount{Source: testcontainers.GenericVolumeMountSource{Name: creds}, Target: "/creds", ReadOnly: true}
	for _, name := range []string{"gateway-1a", "gateway-1b"} {
		d.gateways[name] = d.run(name, imageWorker,
			testcontainers.WithCmd("--creds=/creds/gateway-1.creds", "--name="+name),
			testcontainers.WithMounts(credsRO),
		)
	}
	d.web01 = d.run("web-01", imageMachine,
		testcontainers.WithEnv(map[string]string{
			"MACHINE_USERS":           machineUsers("app:App-compose-demo-1", o.webUsers),
			"POSTROTATE_WORKER_CREDS": "/creds/web-01.creds",
			"POSTROTATE_WORKER_ARGS":  "--name=web-01",
		}),
		withInit(),
		testcontainers.WithMounts(credsRO),
	)
	d.waitWorkers(time.Minute, "gateway-1", "web-01")
	return d
}

// scriptFiles are the scripts every inventory may use, under
// /inventory/scripts: deploy/compose/scripts/*.sh and testdata/scripts/*.sh.
func scriptFiles(t *testing.T) []testcontainers.ContainerFile {
	t.Helper()
	var files []testcontainers.ContainerFile
	for _, dir := range []string{composeDir + "/scripts", "testdata/scripts"} {
		paths, err := filepath.Glob(dir + "/*.sh")
		if err != nil || len(paths) == 0 {
			t.Fatalf("no scripts in %s: %v", dir, err)
		}
		for _, p := range paths {
			files = append(files, testcontainers.ContainerFile{HostFilePath: p, ContainerFilePath: "/inventory/scripts/" + filepath.Base(p), FileMode: 0o755})
		}
	}
	return files
}

// run starts a container of image on the deployment's network, reachable
// by name, and removes it when the test ends.
func (d *deployment) run(name, image string, opts ...testcontainers.ContainerCustomizer) testcontainers.Container {
	d.t.Helper()
	opts = append([]testcontainers.ContainerCustomizer{
		network.WithNetwork([]string{name}, d.net),
		testcontainers.WithConfigModifier(func(c *container.Config) { c.Hostname = name }),
	}, opts...)
	c, err := testcontainers.Run(d.t.Context(), image, opts...)
	testcontainers.CleanupContainer(d.t, c, testcontainers.StopTimeout(time.Second))
	if err != nil {
		if c != nil {
			d.dumpLogs(c)
		}
		d.t.Fatalf("start %s (%s): %v", name, image, err)
	}
	d.t.Cleanup(func() {
		if d.t.Failed() {
			d.dumpLogs(c)
		}
	})
	return c
}

// withInit runs the container under an init process, as compose's
// `init: true`.
func withInit() testcontainers.CustomizeRequestOption {
	return testcontainers.WithHostConfigModifier(func(hc *container.HostConfig) {
		yes := true
		hc.Init = &yes
	})
}

// exec runs cmd in c and returns its output; a non-zero exit fails the
// test.
func (d *deployment) exec(c testcontainers.Container, cmd ...string) string {
	d.t.Helper()
	code, r, err := c.Exec(d.t.Context(), cmd, tcexec.Multiplexed())
	if err != nil {
		d.t.Fatalf("exec %q: %v", cmd, err)
	}
	out, _ := io.ReadAll(r)
	if code != 0 {
		d.t.Fatalf("exec %q: exit %d: %s", cmd, code, out)
	}
	return string(out)
}

func (d *deployment) dumpLogs(c testcontainers.Container) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := c.Logs(ctx)
	if err != nil {
		return
	}
	defer r.Close()
	b, _ := io.ReadAll(r)
	name, _ := c.Name(ctx)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > 40 {
		lines = lines[len(lines)-40:]
	}
	d.t.Logf("logs of %s (last %d lines):\n%s", name, len(lines), strings.Join(lines, "\n"))
}

// waitHealthy waits until serve's /healthz answers 200 (serve announces
// it nowhere else: polled).
func (d *deployment) waitHealthy(timeout time.Duration) {
	d.t.Helper()
	workertest.Eventually(d.t, timeout, "serve healthy", func() bool {
		resp, err := http.Get(d.api + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
}

// connect opens the test's client of the NATS cluster at urls (the nodes'
// ports on the host; the cluster's own addresses are not reachable from
// here), closed when the test ends.
func (d *deployment) connect(urls []string) {
	d.t.Helper()
	nc, err := nats.Connect(strings.Join(urls, ","), nats.Name("postrotate integration test"),
		nats.IgnoreDiscoveredServers(), nats.MaxReconnects(-1), nats.ReconnectWait(250*time.Millisecond))
	if err != nil {
		d.t.Fatalf("connect to NATS at %v: %v", urls, err)
	}
	d.t.Cleanup(nc.Close)
	if d.js, err = jetstream.New(nc); err != nil {
		d.t.Fatal(err)
	}
}

// watchRotations follows the rotation events on the events stream until
// the test ends: a completed or failed event closes the rotation's
// finished channel.
func (d *deployment) watchRotations() {
	d.t.Helper()
	cons, err := d.js.OrderedConsumer(d.t.Context(), d.subj.EventsStream(), jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{d.subj.RotationEvent(messages.EventCompleted), d.subj.RotationEvent(messages.EventFailed)},
	})
	if err != nil {
		d.t.Fatalf("follow the rotation events: %v", err)
	}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		var ev messages.RotationEvent
		if json.Unmarshal(m.Data(), &ev) != nil {
			return // its rotation's wait times out, showing the rotation
		}
		d.mu.Lock()
		defer d.mu.Unlock()
		if !d.ended[ev.RotationID] {
			d.ended[ev.RotationID] = true
			close(d.finishedLocked(ev.RotationID))
		}
	})
	if err != nil {
		d.t.Fatalf("follow the rotation events: %v", err)
	}
	d.t.Cleanup(cc.Stop)
}

// finished returns the channel closed by rotation id's final event.
func (d *deployment) finished(id string) <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.finishedLocked(id)
}

func (d *deployment) finishedLocked(id string) chan struct{} {
	ch, ok := d.finals[id]
	if !ok {
		ch = make(chan struct{})
		d.finals[id] = ch
	}
	return ch
}

// waitWorkers waits until every host has a registered worker.
func (d *deployment) waitWorkers(timeout time.Duration, hosts ...string) {
	d.t.Helper()
	d.waitWorkersBy(timeout, "host", func(w messages.WorkerInfo) string { return w.Host }, hosts)
}

// waitWorkersStarted waits until each named worker is registered with a
// start after since: restarted.
func (d *deployment) waitWorkersStarted(timeout time.Duration, since time.Time, names ...string) {
	d.t.Helper()
	d.waitWorkersBy(timeout, "worker started after "+since.Format(time.RFC3339Nano), func(w messages.WorkerInfo) string {
		if w.StartedAt.Before(since) {
			return ""
		}
		return w.Name
	}, names)
}

// waitWorkersBy watches the workers bucket, where each worker registers
// and heartbeats, until a registration has each key of want.
func (d *deployment) waitWorkersBy(timeout time.Duration, what string, key func(messages.WorkerInfo) string, want []string) {
	d.t.Helper()
	ctx, cancel := context.WithTimeout(d.t.Context(), timeout)
	defer cancel()
	kv, err := d.js.KeyValue(ctx, d.subj.WorkersBucket())
	if err != nil {
		d.t.Fatalf("open the workers bucket: %v", err)
	}
	w, err := kv.WatchAll(ctx)
	if err != nil {
		d.t.Fatalf("watch the workers bucket: %v", err)
	}
	defer func() { _ = w.Stop() }()
	live := map[string]messages.WorkerInfo{} // by registration key
	missing := func() []string {
		have := map[string]bool{}
		for _, info := range live {
			have[key(info)] = true
		}
		var m []string
		for _, k := range want {
			if !have[k] {
				m = append(m, k)
			}
		}
		return m
	}
	for len(missing()) > 0 {
		select {
		case e := <-w.Updates():
			switch {
			case e == nil: // the current registrations are all delivered
			case e.Operation() != jetstream.KeyValuePut:
				delete(live, e.Key())
			default:
				var info messages.WorkerInfo
				if err := json.Unmarshal(e.Value(), &info); err != nil {
					d.t.Fatalf("registration %s: %v", e.Key(), err)
				}
				live[e.Key()] = info
			}
		case <-ctx.Done():
			d.t.Fatalf("no registered worker (%s) for %v after %s: %+v", what, missing(), timeout, live)
		}
	}
}

// call does one API request and decodes the answer into out; another
// status than want fails the test.
func (d *deployment) call(method, path string, body any, want int, out any) {
	d.t.Helper()
	if err := d.tryCall(method, path, body, want, out); err != nil {
		d.t.Fatal(err)
	}
}

// tryCall is call returning its error: for other goroutines than the
// test's.
func (d *deployment) tryCall(method, path string, body any, want int, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(d.t.Context(), method, d.api+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+d.token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		return fmt.Errorf("%s %s: status %d, want %d: %s", method, path, resp.StatusCode, want, b)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("%s %s: decode %s: %w", method, path, b, err)
		}
	}
	return nil
}

// rotate starts a rotation of user and returns its id.
func (d *deployment) rotate(user string) string {
	d.t.Helper()
	id, err := d.tryRotate(user)
	if err != nil {
		d.t.Fatal(err)
	}
	return id
}

func (d *deployment) tryRotate(user string) (string, error) {
	var r runs.Run
	err := d.tryCall(http.MethodPost, "/v1/rotations", map[string]string{"user": user}, http.StatusAccepted, &r)
	return r.ID, err
}

// wait waits for the rotation's completed or failed event and returns the
// rotation as the API shows it then.
func (d *deployment) wait(id string, timeout time.Duration) rotation.View {
	d.t.Helper()
	r, err := d.tryWait(id, timeout)
	if err != nil {
		d.t.Fatal(err)
	}
	return r
}

// tryWait is wait returning its error: for other goroutines than the
// test's.
func (d *deployment) tryWait(id string, timeout time.Duration) (rotation.View, error) {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	var v rotation.View
	select {
	case <-d.finished(id):
	case <-timer.C:
		_ = d.tryCall(http.MethodGet, "/v1/rotations/"+id, nil, http.StatusOK, &v)
		return v, fmt.Errorf("rotation %s: no completed or failed event after %s: %+v", id, timeout, v)
	}
	if err := d.tryCall(http.MethodGet, "/v1/rotations/"+id, nil, http.StatusOK, &v); err != nil {
		return v, err
	}
	// The event follows the stored outcome.
	if !v.Finished() {
		return v, fmt.Errorf("rotation %s: its final event is out, the API says %s: %+v", id, v.State, v)
	}
	return v, nil
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("find a free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func randomHex(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// step returns the index of the step of rotation id that runs script,
// as the rotation's plan lists it.
func (d *deployment) step(id, script string) int {
	d.t.Helper()
	var v rotation.View
	d.call(http.MethodGet, "/v1/rotations/"+id, nil, http.StatusOK, &v)
	for _, s := range v.Steps {
		if s.Name == script {
			return s.Index
		}
	}
	d.t.Fatalf("rotation %s has no step running %s: %+v", id, script, v.Steps)
	return 0
}

// results follows the results of step of rotation id on the results
// stream, as its workers publish them (one, unless a refused task message
// claimed the step too).
func (d *deployment) results(id string, step int) jetstream.Consumer {
	d.t.Helper()
	cons, err := d.js.OrderedConsumer(d.t.Context(), d.subj.ResultsStream(), jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{d.subj.Result(id, step)},
	})
	if err != nil {
		d.t.Fatalf("follow the results of rotation %s step %d: %v", id, step, err)
	}
	return cons
}

// nextResult returns the next result of cons, failing the test after
// timeout. A fetch that fails (a cluster node's JetStream briefly without
// responders, as when a container dies beside it) is tried again.
func (d *deployment) nextResult(cons jetstream.Consumer, timeout time.Duration) messages.RotationResult {
	d.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		msg, err := cons.Next(jetstream.FetchMaxWait(max(min(time.Until(deadline), 10*time.Second), time.Second)))
		if err == nil {
			rr, err := messages.DecodeResult(msg.Data())
			if err != nil {
				d.t.Fatalf("result on %s: %v", msg.Subject(), err)
			}
			return rr
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("no result within %s: %v", timeout, err)
		}
		d.t.Logf("fetch a result: %v (trying again)", err)
		time.Sleep(250 * time.Millisecond)
	}
}

// waitFile waits until path exists in c (a file on a machine announces
// itself nowhere: polled).
func (d *deployment) waitFile(c testcontainers.Container, path string, timeout time.Duration) {
	d.t.Helper()
	workertest.Eventually(d.t, timeout, path+" appears", func() bool {
		code, _, err := c.Exec(d.t.Context(), []string{"test", "-e", path})
		return err == nil && code == 0
	})
}

// checkPassword fails the test unless password is user's in c's
// /etc/shadow. The password reaches c in a file (0600, removed after), not
// on a command line.
func (d *deployment) checkPassword(c testcontainers.Container, user, password string) {
	d.t.Helper()
	path := "/root/.check-" + randomHex(d.t, 6)
	if err := c.CopyToContainer(d.t.Context(), []byte(password), path, 0o600); err != nil {
		d.t.Fatalf("copy the password to check: %v", err)
	}
	defer d.exec(c, "rm", "-f", path)
	const check = `
import crypt, spwd, sys
with open(sys.argv[2]) as f:
    password = f.read()
hashed = spwd.getspnam(sys.argv[1]).sp_pwdp
sys.exit(0 if crypt.crypt(password, hashed) == hashed else 3)
`
	code, r, err := c.Exec(d.t.Context(), []string{"python3", "-W", "ignore", "-c", check, user, path}, tcexec.Multiplexed())
	if err != nil {
		d.t.Fatalf("check the password of %s: %v", user, err)
	}
	out, _ := io.ReadAll(r)
	switch code {
	case 0:
	case 3:
		d.t.Errorf("the password of %s is not the expected one", user)
	default:
		d.t.Fatalf("check the password of %s: exit %d: %s", user, code, out)
	}
}
