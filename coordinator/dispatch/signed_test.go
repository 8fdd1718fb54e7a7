package dispatch

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/postrotate/postrotate/coordinator/rotation"
	"github.com/postrotate/postrotate/messages"
	"github.com/postrotate/postrotate/messages/envelope"
	"github.com/postrotate/postrotate/worker"
	"github.com/postrotate/postrotate/worker/workertest"
)

const newMarker = "Marker-N3w-Passw0rd-8e27"

// startWorker starts the in-process worker of gw-1 with trust.
func (b *bundle) startWorker(tb testing.TB, trust *envelope.Trust) {
	tb.Helper()
	w, err := worker.New(b.js, worker.Options{Host: "gw-1", FetchWait: time.Second, Trust: trust})
	if err != nil {
		tb.Fatal(err)
	}
	workertest.Start(tb, w, 0)
}

// identity is a coordinator and the trust of gw-1's worker.
func identity(t *testing.T) (*envelope.Coordinator, *envelope.Trust) {
	t.Helper()
	coord, err := envelope.NewCoordinator()
	if err != nil {
		t.Fatal(err)
	}
	trust, err := coord.EphemeralTrust()
	if err != nil {
		t.Fatal(err)
	}
	return coord, trust
}

func keyOf(trust *envelope.Trust) func(context.Context, string) (string, error) {
	return func(_ context.Context, host string) (string, error) {
		if host == "gw-1" {
			return trust.CurveKey(), nil
		}
		return "", nil
	}
}

type runResult struct {
	out rotation.Outcome
	err error
}

func runAsync(t *testing.T, e *rotation.Engine, p rotation.Rotation) <-chan runResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	done := make(chan runResult, 1)
	go func() {
		defer cancel()
		out, err := e.Run(ctx, p)
		done <- runResult{out, err}
	}()
	return done
}

// queued waits for the started event of step 1 of rotation id, published
// once its task is in the work queue, and returns the task of gw-1 there.
func (b *bundle) queued(t *testing.T, id string) *jetstream.RawStreamMsg {
	t.Helper()
	subj := messages.Subjects{}
	cons, err := b.js.OrderedConsumer(t.Context(), subj.EventsStream(), jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{subj.StepEvent(messages.EventStarted)},
	})
	if err != nil {
		t.Fatalf("follow the step events: %v", err)
	}
	for {
		msg := workertest.Next(t, cons, 10*time.Second)
		var ev messages.StepEvent
		if err := json.Unmarshal(msg.Data(), &ev); err != nil {
			t.Fatalf("event on %s: %v", msg.Subject(), err)
		}
		if ev.RotationID == id && ev.Step == 1 {
			break
		}
	}
	s, err := b.js.Stream(t.Context(), subj.TasksStream())
	if err != nil {
		t.Fatal(err)
	}
	msg, err := s.GetLastMsgForSubject(t.Context(), subj.Tasks("gw-1"))
	if err != nil {
		t.Fatalf("no task queued for gw-1: %v", err)
	}
	return msg
}

// With a Signer the task is signed and its secret sealed for the host's
// worker: the stream holds no secret, and the worker with Trust runs it.
func TestSignedSealedRotation(t *testing.T) {
	t.Parallel()
	b := setup(t, false)
	coord, trust := identity(t)
	d := New(b.js, Options{Signer: coord, WorkerKey: keyOf(trust)})
	id := rotation.NewID()
	done := runAsync(t, engine(d, 0), rotation.Rotation{ID: id, Plan: b.plan, NewPassword: newMarker, OldPassword: marker})

	// The task as the broker stores it, before any worker takes it.
	stored := b.queued(t, id)
	checkNoPasswordIn(t, stored.Data)
	checkSignedAndSealed(t, trust, stored)

	// A refusal of another message claiming this step is not this step's.
	forged, _ := json.Marshal(messages.RotationResult{SchemaVersion: messages.SchemaVersion, RotationID: id, Step: 1, Host: "gw-1", ExitCode: -1, Error: "refused: task is not signed"})
	if _, err := b.js.Publish(t.Context(), "postrotate.refused.gw-1", forged, jetstream.WithMsgID(messages.RefusedMsgID(stored.Sequence+1))); err != nil {
		t.Fatal(err)
	}

	b.startWorker(t, trust)
	res := <-done
	if res.err != nil || !res.out.Success() || len(res.out.Results) != 1 || res.out.Results[0].Stdout != "ok\n" {
		t.Fatalf("Run = %+v, %v", res.out, res.err)
	}
}

// checkNoPasswordIn checks that the stored task shows neither password,
// in clear or in any base64 encoding, and has no clear secret field.
func checkNoPasswordIn(t *testing.T, data []byte) {
	t.Helper()
	for _, pw := range []string{marker, newMarker} {
		for _, leak := range []string{pw, base64.StdEncoding.EncodeToString([]byte(pw)), base64.RawStdEncoding.EncodeToString([]byte(pw)), base64.RawURLEncoding.EncodeToString([]byte(pw))} {
			if bytes.Contains(data, []byte(leak)) {
				t.Fatalf("the stored task shows %q:\n%s", leak, data)
			}
		}
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(data, &fields); err != nil {
		t.Fatal(err)
	}
	if _, clear := fields["secret"]; clear {
		t.Fatalf("the stored task has a clear secret:\n%s", data)
	}
}

// checkSignedAndSealed checks that the stored task carries a signature the
// worker's trust accepts, and a sealed secret it opens to both passwords
// and the payload.
func checkSignedAndSealed(t *testing.T, trust *envelope.Trust, stored *jetstream.RawStreamMsg) {
	t.Helper()
	if err := trust.Verify(stored.Data, stored.Header.Get(envelope.HeaderSignature), stored.Header.Get(envelope.HeaderSigner)); err != nil {
		t.Fatalf("stored task signature: %v", err)
	}
	task, err := messages.DecodeTask(stored.Data)
	if err != nil {
		t.Fatal(err)
	}
	secret, err := trust.OpenSecret(task.SealedSecret)
	if err != nil {
		t.Fatalf("open the sealed secret: %v", err)
	}
	if !slices.Contains(secret.Mask, newMarker) || !slices.Contains(secret.Mask, marker) || len(secret.Stdin) == 0 {
		t.Fatalf("the sealed secret lacks the passwords or the payload: %d mask values, %d stdin bytes", len(secret.Mask), len(secret.Stdin))
	}
}

// A host without an enrolled key: the step fails naming the fix, and
// nothing is sent.
func TestSignerWithoutWorkerKey(t *testing.T) {
	t.Parallel()
	b := setup(t, false)
	coord, _ := identity(t)
	for name, key := range map[string]func(context.Context, string) (string, error){
		"no lookup":   nil,
		"empty key":   func(context.Context, string) (string, error) { return "", nil },
		"lookup says": func(context.Context, string) (string, error) { return "", ErrNoWorkerKey },
	} {
		checkStepFailsUnsent(t, b, name, New(b.js, Options{Signer: coord, WorkerKey: key}))
	}
	checkNoTaskPublished(t, b.js)
}

// checkStepFailsUnsent runs the rotation through d, whose WorkerKey finds
// no key for gw-1, and checks that its step fails naming the fix, unsent,
// with a published result and step event like any other.
func checkStepFailsUnsent(t *testing.T, b *bundle, name string, d *Dispatcher) {
	t.Helper()
	out, err := engine(d, 0).Run(t.Context(), rotation.Rotation{ID: rotation.NewID(), Plan: b.plan, NewPassword: newMarker, OldPassword: marker})
	if err != nil {
		t.Fatalf("%s: Run: %v", name, err)
	}
	want := `host "gw-1" has no enrolled worker: run postrotate worker add gw-1`
	if out.Success() || len(out.Results) != 1 || out.Results[0].Error != want || out.Sent {
		t.Fatalf("%s: outcome %+v, want error %q, nothing sent", name, out, want)
	}
	// The step that could not be sent has its published result and
	// step event, like any other.
	stored, err := engine(d, 0).Results(t.Context(), out.RotationID, 1)
	if err != nil || len(stored) != 1 || stored[0].Error != want {
		t.Fatalf("%s: published results %+v (%v), want the step's with error %q", name, stored, err, want)
	}
	ev := stepEvents(t, b.js, out.RotationID)
	if len(ev) != 1 || ev[0].Kind != messages.EventFailed || ev[0].Step != 1 || ev[0].Error != want {
		t.Fatalf("%s: step events %+v, want one failed event of step 1", name, ev)
	}
}

// checkNoTaskPublished checks that the tasks stream never held a message.
func checkNoTaskPublished(t *testing.T, js jetstream.JetStream) {
	t.Helper()
	s, err := js.Stream(t.Context(), "POSTROTATE_TASKS")
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 0 || info.State.LastSeq != 0 {
		t.Fatalf("tasks were published: %+v", info.State)
	}
}

// The worker refuses the very message the dispatcher published (sealed for
// a key it no longer has): the step fails at once with the reason, not at
// its deadline, and that is the step's stored result.
func TestRefusedTaskFailsStep(t *testing.T) {
	t.Parallel()
	b := setup(t, false)
	coord, trust := identity(t)
	stale, err := coord.EphemeralTrust()
	if err != nil {
		t.Fatal(err)
	}
	b.startWorker(t, trust)
	// The pickup timeout alone is longer than runAsync allows.
	d := New(b.js, Options{Signer: coord, WorkerKey: keyOf(stale)})
	id := rotation.NewID()
	res := <-runAsync(t, engine(d, 2*time.Minute), rotation.Rotation{ID: id, Plan: b.plan, NewPassword: newMarker, OldPassword: marker})
	if res.err != nil || res.out.Success() || len(res.out.Results) != 1 {
		t.Fatalf("Run = %+v, %v", res.out, res.err)
	}
	rr := res.out.Results[0]
	want := `refused by worker "` // then the worker's name, the host and the reason
	if !strings.HasPrefix(rr.Error, want) || !strings.HasSuffix(rr.Error, `of host "gw-1": `+envelope.ErrNotForMe.Error()) || rr.Worker == "" {
		t.Fatalf("result %+v", rr)
	}
	stored, err := engine(d, 0).Results(t.Context(), id, 1)
	if err != nil || len(stored) != 1 || stored[0].Error != rr.Error {
		t.Fatalf("stored results %+v, %v", stored, err)
	}
}

// stepEvents returns the step events of rotation id in the events stream.
func stepEvents(t *testing.T, js jetstream.JetStream, id string) []messages.StepEvent {
	t.Helper()
	subj := messages.Subjects{}
	cons, err := js.OrderedConsumer(t.Context(), subj.EventsStream(), jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{subj.StepEvent("*")},
	})
	if err != nil {
		t.Fatal(err)
	}
	var out []messages.StepEvent
	for {
		batch, err := cons.FetchNoWait(100)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			var ev messages.StepEvent
			if err := json.Unmarshal(m.Data(), &ev); err != nil {
				t.Fatal(err)
			}
			if ev.RotationID == id {
				out = append(out, ev)
			}
		}
		if n == 0 {
			return out
		}
	}
}

// A worker-key lookup that fails (the identity store not answering) is
// tried again: the step runs once it answers. One that never answers fails
// the step, not sent, once its task would have expired; the rotation is
// not held up.
func TestWorkerKeyLookupRetried(t *testing.T) {
	t.Parallel()
	b := setup(t, false)
	coord, trust := identity(t)
	b.startWorker(t, trust)
	key := keyOf(trust)
	var calls atomic.Int32
	flaky := func(ctx context.Context, host string) (string, error) {
		if calls.Add(1) <= 2 {
			return "", errors.New("read the identity: nats: timeout")
		}
		return key(ctx, host)
	}
	res := <-runAsync(t, engine(New(b.js, Options{Signer: coord, WorkerKey: flaky}), 0),
		rotation.Rotation{ID: rotation.NewID(), Plan: b.plan, NewPassword: newMarker, OldPassword: marker})
	if res.err != nil || !res.out.Success() || calls.Load() != 3 {
		t.Fatalf("flaky lookup: %+v, %v after %d lookups", res.out, res.err, calls.Load())
	}

	broken := func(context.Context, string) (string, error) {
		return "", errors.New("read the identity: nats: timeout")
	}
	res = <-runAsync(t, engine(New(b.js, Options{Signer: coord, WorkerKey: broken}), time.Second),
		rotation.Rotation{ID: rotation.NewID(), Plan: b.plan, NewPassword: newMarker, OldPassword: marker})
	if res.err != nil || res.out.Sent || len(res.out.Results) != 1 || !strings.HasPrefix(res.out.Results[0].Error, `look up the worker key of host "gw-1": `) {
		t.Fatalf("broken lookup: %+v, %v; want the step failed, not sent", res.out, res.err)
	}
}
