package app

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/postrotate/postrotate/coordinator/broker"
	"github.com/postrotate/postrotate/coordinator/broker/brokertest"
	"github.com/postrotate/postrotate/coordinator/identity"
	"github.com/postrotate/postrotate/coordinator/runs"
	"github.com/postrotate/postrotate/coordinator/server"
	"github.com/postrotate/postrotate/coordinator/vault"
	"github.com/postrotate/postrotate/messages"
	"github.com/postrotate/postrotate/messages/envelope"
	"github.com/postrotate/postrotate/worker"
	"github.com/postrotate/postrotate/worker/natsconn"
	"github.com/postrotate/postrotate/worker/workertest"
)

const testToken = "test-api-token-7c1e"

// secured is a serve as `postrotate serve` wires it: an embedded broker
// that admits only the coordinator's user and the enrolled workers', a
// server that signs tasks, an API token.
type secured struct {
	b   *broker.Broker
	s   *App
	h   http.Handler
	key vault.Key
}

func startSecured(t *testing.T, inv string) *secured {
	t.Helper()
	sc := &secured{key: vault.NewKey()}
	coordUser := identity.CoordinatorUser(sc.key)
	pub, _ := coordUser.PublicKey()
	subj := messages.Subjects{}
	var err error
	sc.b, err = broker.Start(broker.Options{StoreDir: t.TempDir(), Listen: "127.0.0.1:0", Users: identity.Users(subj, pub, nil)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sc.b.Shutdown)
	opt, err := broker.UserOption(coordUser)
	if err != nil {
		t.Fatal(err)
	}
	nc, err := sc.b.Connect(opt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	inventory := inventoryFor(t, map[string]string{"u.sh": "echo user\n", "m.sh": "echo machine\n"}, inv, "[{file: m.sh}]")
	sc.s, err = New(js, Options{
		Inventory: inventory, Key: &sc.key, APIToken: testToken, NATSURL: sc.b.ClientURL(), NoSchedules: true,
		PickupTimeout: 20 * time.Second,
		OnWorkers: func(ws []identity.Worker) error {
			return sc.b.SetUsers(identity.Users(subj, pub, ws))
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := sc.s.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sc.s.Stop(context.Background()) })
	sc.h = sc.s.Handler()
	return sc
}

// call does an API request with the token.
func (sc *secured) call(t *testing.T, method, path, body string, out any) int {
	t.Helper()
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+testToken)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	rec := httptest.NewRecorder()
	sc.h.ServeHTTP(rec, req)
	if out != nil && rec.Code/100 == 2 {
		if err := json.Unmarshal(rec.Body.Bytes(), out); err != nil {
			t.Fatalf("%s %s: %d %s: %v", method, path, rec.Code, rec.Body, err)
		}
	}
	return rec.Code
}

// enroll enrolls host through the API.
func (sc *secured) enroll(t *testing.T, host string) identity.Enrolled {
	t.Helper()
	var en identity.Enrolled
	if code := sc.call(t, "POST", "/v1/workers/enroll", `{"host": "`+host+`"}`, &en); code != http.StatusCreated {
		t.Fatalf("enroll %s: %d", host, code)
	}
	return en
}

// remote is a worker connected over TCP with its credentials, as
// postrotate-worker --creds is.
type remote struct {
	nc     *nats.Conn
	js     jetstream.JetStream
	logs   *brokertest.Logs
	closed chan struct{}
}

func connectWorker(t *testing.T, c envelope.Credentials) (*remote, error) {
	t.Helper()
	r := &remote{logs: brokertest.NewLogs(), closed: make(chan struct{})}
	logger := zerolog.New(r.logs)
	opts, err := natsconn.Options(natsconn.Config{Host: c.Host, Creds: &c, Logger: &logger})
	if err != nil {
		t.Fatal(err)
	}
	opts = append(opts, nats.NoReconnect(), nats.ClosedHandler(func(*nats.Conn) { close(r.closed) }))
	r.nc, err = nats.Connect(c.NATS, opts...)
	if err != nil {
		return nil, err
	}
	t.Cleanup(r.nc.Close)
	if r.js, err = jetstream.New(r.nc); err != nil {
		t.Fatal(err)
	}
	return r, nil
}

func (r *remote) start(t *testing.T, c envelope.Credentials) *worker.Worker {
	t.Helper()
	trust, err := c.Trust()
	if err != nil {
		t.Fatal(err)
	}
	w, err := worker.New(r.js, worker.Options{Host: c.Host, Name: c.Host + "-remote", FetchWait: 500 * time.Millisecond, Trust: trust})
	if err != nil {
		t.Fatal(err)
	}
	workertest.Start(t, w, 0)
	return w
}

// A whole rotation with workers connected by the credentials enrolment
// gave them, under the rights the embedded server enforces; a worker that
// reaches for another host's tasks is refused and logs the violation.
func TestRotationWithEnrolledWorkers(t *testing.T) {
	t.Parallel()
	sc := startSecured(t, "[{file: u.sh}]")
	gwCreds, m1Creds := sc.enroll(t, "gw"), sc.enroll(t, "m1")
	checkEnrolment(t, sc, gwCreds)
	gw, err := connectWorker(t, gwCreds.Credentials)
	if err != nil {
		t.Fatal(err)
	}
	m1, err := connectWorker(t, m1Creds.Credentials)
	if err != nil {
		t.Fatal(err)
	}
	gw.start(t, gwCreds.Credentials)
	m1.start(t, m1Creds.Credentials)

	sc.checkRotationOfAlice(t)
	// Every message the workers sent was within their rights.
	for name, r := range map[string]*remote{"gw": gw, "m1": m1} {
		if vs := r.logs.Violations(); len(vs) > 0 {
			t.Errorf("worker %s had permission violations: %v", name, vs)
		}
	}
	checkCannotRunM1(t, gw)
}

// checkEnrolment checks what enrolling gw answered: credentials for the
// broker's URL, a first enrolment of a host in the inventory, a NATS
// config naming its user, and valid credentials.
func checkEnrolment(t *testing.T, sc *secured, gwCreds identity.Enrolled) {
	t.Helper()
	if gwCreds.Credentials.NATS != sc.b.ClientURL() || gwCreds.Replaced || !gwCreds.InInventory ||
		!strings.Contains(gwCreds.NATSConfig, gwCreds.Worker.UserKey) {
		t.Fatalf("enrolment %+v", gwCreds)
	}
	if err := gwCreds.Credentials.Validate(); err != nil {
		t.Fatal(err)
	}
}

// checkRotationOfAlice rotates alice through the API, with the token, and
// checks that the remote workers ran both her steps.
func (sc *secured) checkRotationOfAlice(t *testing.T) {
	t.Helper()
	var run runs.Run
	if code := sc.call(t, "POST", "/v1/rotations", `{"user":"alice"}`, &run); code != http.StatusAccepted {
		t.Fatalf("POST rotation: %d", code)
	}
	v := waitFinished(t, sc.s.js, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.Header.Set("Authorization", "Bearer "+testToken)
		sc.h.ServeHTTP(w, r)
	}), run.ID)
	if v.State != runs.StateCompleted || len(v.Results) != 2 || v.Results[0].Worker != "gw-remote" || v.Results[1].Stdout != "machine\n" {
		t.Fatalf("rotation %+v", v)
	}
}

// checkCannotRunM1 checks that gw's user cannot run m1: binding m1's
// consumer is refused, and so is publishing a task for it, each logged as
// a violation.
func checkCannotRunM1(t *testing.T, gw *remote) {
	t.Helper()
	subj := messages.Subjects{}
	other, err := worker.New(gw.js, worker.Options{Host: "m1", Name: "thief", Trust: nil})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Second)
	defer cancel()
	if err := other.Start(ctx); err == nil {
		_ = other.Stop(t.Context())
		t.Fatal("gw's user bound the consumer of m1")
	}
	want := "$JS.API.CONSUMER.INFO." + subj.TasksStream() + "." + subj.Consumer("m1")
	gw.logs.WaitViolation(t, want)
	// Nor publish a task for it.
	if err := gw.nc.Publish(subj.Tasks("m1"), []byte("{}")); err != nil {
		t.Fatal(err)
	}
	gw.logs.WaitViolation(t, subj.Tasks("m1"))
}

// A re-enrolled host's old user is shut out at once: its connection is
// closed and it cannot connect again; a revoked host's too.
func TestReEnrolmentRevokesTheOldUser(t *testing.T) {
	t.Parallel()
	sc := startSecured(t, "[{file: u.sh}]")
	first := sc.enroll(t, "gw")
	old, err := connectWorker(t, first.Credentials)
	if err != nil {
		t.Fatal(err)
	}
	second := sc.enroll(t, "gw")
	if !second.Replaced || second.Worker.UserKey == first.Worker.UserKey {
		t.Fatalf("re-enrolment %+v", second.Worker)
	}
	old.waitClosed(t, "the old user's connection stayed open")
	if _, err := connectWorker(t, first.Credentials); !errors.Is(err, nats.ErrAuthorization) {
		t.Fatalf("old credentials: %v, want an authorization error", err)
	}
	cur, err := connectWorker(t, second.Credentials)
	if err != nil {
		t.Fatalf("new credentials: %v", err)
	}
	var all []identity.Worker
	if code := sc.call(t, "GET", "/v1/workers/enrolled", "", &all); code != http.StatusOK || len(all) != 1 || all[0].UserKey != second.Worker.UserKey {
		t.Fatalf("enrolled: %d %+v", code, all)
	}
	sc.checkRevoke(t, cur)
}

// waitClosed waits for r's connection to be closed, failing with msg if
// it stays open.
func (r *remote) waitClosed(t *testing.T, msg string) {
	t.Helper()
	select {
	case <-r.closed:
	case <-time.After(10 * time.Second):
		t.Fatal(msg)
	}
}

// checkRevoke revokes gw, whose current worker is cur, and checks that
// cur's connection is closed, that a second revocation finds nothing, and
// that enrolling an empty host is refused.
func (sc *secured) checkRevoke(t *testing.T, cur *remote) {
	t.Helper()
	if code := sc.call(t, "DELETE", "/v1/workers/enrolled/gw", "", nil); code != http.StatusNoContent {
		t.Fatalf("DELETE: %d", code)
	}
	cur.waitClosed(t, "the revoked user's connection stayed open")
	if code := sc.call(t, "DELETE", "/v1/workers/enrolled/gw", "", nil); code != http.StatusNotFound {
		t.Fatalf("second DELETE: %d", code)
	}
	if code := sc.call(t, "POST", "/v1/workers/enroll", `{"host": ""}`, nil); code != http.StatusBadRequest {
		t.Fatalf("empty host: %d", code)
	}
}

// With an API token, /v1 answers 401 without it or with another, and
// /healthz stays open.
func TestAPIToken(t *testing.T) {
	t.Parallel()
	sc := startSecured(t, "[{file: u.sh}]")
	for name, header := range map[string]string{
		"none":         "",
		"wrong":        "Bearer not-the-token",
		"prefix":       "Bearer " + testToken[:len(testToken)-1],
		"longer":       "Bearer " + testToken + "x",
		"basic scheme": "Basic " + testToken,
		"no scheme":    testToken,
	} {
		for _, path := range []string{"/v1/records", "/v1/workers", "/v1/nope"} {
			req := httptest.NewRequest("GET", path, nil)
			if header != "" {
				req.Header.Set("Authorization", header)
			}
			rec := httptest.NewRecorder()
			sc.h.ServeHTTP(rec, req)
			if rec.Code != http.StatusUnauthorized || !strings.HasPrefix(rec.Header().Get("WWW-Authenticate"), "Bearer") {
				t.Errorf("%s token, %s: %d", name, path, rec.Code)
			}
		}
	}
	req := httptest.NewRequest("POST", "/v1/workers/enroll", strings.NewReader(`{"host": "gw"}`))
	rec := httptest.NewRecorder()
	sc.h.ServeHTTP(rec, req)
	if rec.Code != http.StatusUnauthorized || strings.Contains(rec.Body.String(), "SU") {
		t.Fatalf("enroll without a token: %d %s", rec.Code, rec.Body)
	}
	if code := sc.call(t, "GET", "/v1/records", "", nil); code != http.StatusOK {
		t.Fatalf("with the token: %d", code)
	}
	if code := do(t, sc.h, "GET", "/healthz", "", nil); code != http.StatusOK {
		t.Fatalf("healthz without a token: %d", code)
	}
}

// A server that sends tasks unsigned refuses to enroll.
func TestUnsignedRefusesEnrolment(t *testing.T) {
	t.Parallel()
	inv := inventoryFor(t, map[string]string{"u.sh": "echo user\n", "m.sh": "echo machine\n"}, "[{file: u.sh}]", "[{file: m.sh}]")
	js, _ := startBroker(t)
	s, err := New(js, Options{Inventory: inv, Key: &testKey, Unsigned: true, NoSchedules: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Stop(context.Background()) })
	var eb server.ErrorBody
	if code := do(t, s.Handler(), "POST", "/v1/workers/enroll", `{"host": "gw"}`, &eb); code != http.StatusConflict || !strings.Contains(eb.Error, "--insecure-workers") {
		t.Fatalf("enroll: %d %q", code, eb.Error)
	}
	for _, r := range [][2]string{{"GET", "/v1/workers/enrolled"}, {"DELETE", "/v1/workers/enrolled/gw"}} {
		if code := do(t, s.Handler(), r[0], r[1], "", &eb); code != http.StatusConflict || !strings.Contains(eb.Error, server.ErrUnsigned.Error()) {
			t.Fatalf("%s %s: %d %q", r[0], r[1], code, eb.Error)
		}
	}
	// Nothing can hand out credentials, an in-process worker's either.
	if s.Enroller() != nil {
		t.Fatal("an unsigned coordinator has an enroller")
	}
}
