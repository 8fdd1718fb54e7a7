package worker

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/postrotate/postrotate/executor"
	"github.com/postrotate/postrotate/executor/local"
	"github.com/postrotate/postrotate/executor/proctest"
	"github.com/postrotate/postrotate/messages"
	"github.com/postrotate/postrotate/messages/envelope"
	"github.com/postrotate/postrotate/worker/workertest"
)

// trusted is a worker with Trust running real scripts, the coordinator
// whose tasks it trusts, and a directory where scripts leave files.
type trusted struct {
	*bundle
	w     *Worker
	coord *envelope.Coordinator
	trust *envelope.Trust
	dir   string
	logs  *proctest.Buffer
}

func setupTrusted(t *testing.T, cfg config, mod func(*Options)) *trusted {
	t.Helper()
	coord, err := envelope.NewCoordinator()
	if err != nil {
		t.Fatal(err)
	}
	trust, err := coord.EphemeralTrust()
	if err != nil {
		t.Fatal(err)
	}
	logs := new(proctest.Buffer)
	log := zerolog.New(logs)
	w, b := setup(t, cfg, func(o *Options) {
		o.Trust = trust
		o.Logger = &log
		o.Executors = map[string]executor.Executor{messages.RunnerLocal: local.New(local.Options{TempDir: t.TempDir()})}
		if mod != nil {
			mod(o)
		}
	})
	return &trusted{bundle: b, w: w, coord: coord, trust: trust, dir: t.TempDir(), logs: logs}
}

const secretMarker = "S3cret-marker"

// touching returns task step of rotation rot-1 whose script creates the
// file name in tr.dir.
func (tr *trusted) touching(step int, name string) messages.Task {
	tk := task(step)
	tk.Script.Content = []byte("touch '" + filepath.Join(tr.dir, name) + "'\n")
	return tk
}

// signed is the message the coordinator publishes for tk: its secret sealed
// for workerKey, the data signed by by.
func signed(t *testing.T, by *envelope.Coordinator, tk messages.Task, workerKey string) *nats.Msg {
	t.Helper()
	sealed, err := by.SealSecret(*tk.Secret, workerKey)
	if err != nil {
		t.Fatal(err)
	}
	tk.Secret, tk.SealedSecret = nil, sealed
	data, err := json.Marshal(tk)
	if err != nil {
		t.Fatal(err)
	}
	return signData(t, by, data)
}

func signData(t *testing.T, by *envelope.Coordinator, data []byte) *nats.Msg {
	t.Helper()
	sig, signer, err := by.Sign(data)
	if err != nil {
		t.Fatal(err)
	}
	msg := &nats.Msg{Data: data, Header: nats.Header{}}
	msg.Header.Set(envelope.HeaderSignature, sig)
	msg.Header.Set(envelope.HeaderSigner, signer)
	return msg
}

// send publishes msg on the worker's task subject as a new message.
func (tr *trusted) send(t *testing.T, msg *nats.Msg) uint64 {
	t.Helper()
	m := &nats.Msg{Subject: tr.subj.Tasks(host), Data: msg.Data, Header: msg.Header}
	ack, err := tr.js.PublishMsg(t.Context(), m)
	if err != nil {
		t.Fatal(err)
	}
	return ack.Sequence
}

func (b *bundle) refusal(t *testing.T) messages.RotationResult {
	t.Helper()
	select {
	case rr := <-b.refused:
		return rr
	case <-time.After(20 * time.Second):
		t.Fatal("no refusal within 20s")
		return messages.RotationResult{}
	}
}

func (tr *trusted) exists(name string) bool {
	_, err := os.Stat(filepath.Join(tr.dir, name))
	return err == nil
}

// A worker with Trust runs only what the coordinator signed for it, once:
// every other message is refused on the refused subject, runs nothing,
// leaves the queue, and cannot pre-empt the real step's result.
func TestTrustRefusesWhatTheCoordinatorDidNotSend(t *testing.T) {
	t.Parallel()
	tr := setupTrusted(t, config{}, nil)
	start(t, tr.w)

	impostor, err := envelope.NewCoordinator()
	if err != nil {
		t.Fatal(err)
	}
	otherWorker, err := tr.coord.EphemeralTrust()
	if err != nil {
		t.Fatal(err)
	}
	me := tr.trust.CurveKey()

	// Every forged message claims to be step 1 of rot-1, whose real task
	// comes last.
	clear, _ := json.Marshal(tr.touching(1, "unsigned-clear"))
	sealedTask := tr.touching(1, "unsigned-sealed")
	sealedTask.SealedSecret, _ = tr.coord.SealSecret(*sealedTask.Secret, me)
	sealedTask.Secret = nil
	unsignedSealed, _ := json.Marshal(sealedTask)
	borrowed := signed(t, impostor, tr.touching(1, "borrowed-name"), me)
	sig, _, _ := impostor.Sign(borrowed.Data)
	ourSigner, _ := tr.coord.PublicKeys()
	borrowed.Header.Set(envelope.HeaderSignature, sig)
	borrowed.Header.Set(envelope.HeaderSigner, ourSigner)
	tampered := signed(t, tr.coord, tr.touching(1, "tampered-0"), me)
	if !bytes.Contains(tampered.Data, []byte(`"timeout_ms":5000`)) {
		t.Fatalf("no timeout to change in %s", tampered.Data)
	}
	tampered.Data = bytes.Replace(tampered.Data, []byte(`"timeout_ms":5000`), []byte(`"timeout_ms":9000`), 1)
	clearSigned, _ := json.Marshal(tr.touching(1, "clear-signed"))
	otherHost := tr.touching(1, "other-host")
	otherHost.Host = "another-host"

	forged := []struct {
		name string
		msg  *nats.Msg
		file string
		want string
	}{
		{"unsigned, secret in clear", &nats.Msg{Data: clear}, "unsigned-clear", envelope.ErrUnsigned.Error()},
		{"unsigned, secret sealed", &nats.Msg{Data: unsignedSealed}, "unsigned-sealed", envelope.ErrUnsigned.Error()},
		{"signed by another key", signed(t, impostor, tr.touching(1, "impostor"), me), "impostor", envelope.ErrUnknownSigner.Error()},
		{"signed by another key under the coordinator's name", borrowed, "borrowed-name", envelope.ErrBadSignature.Error()},
		{"one byte changed", tampered, "tampered-0", envelope.ErrBadSignature.Error()},
		{"sealed for another worker", signed(t, tr.coord, tr.touching(1, "other-worker"), otherWorker.CurveKey()), "other-worker", envelope.ErrNotForMe.Error()},
		{"secret not sealed", signData(t, tr.coord, clearSigned), "clear-signed", envelope.ErrNotSealed.Error()},
		{"for another host", signed(t, tr.coord, otherHost, me), "other-host", `task is for host "another-host"`},
	}
	seqs := map[string]uint64{}
	for _, f := range forged {
		seqs[f.name] = tr.send(t, f.msg)
	}
	real := signed(t, tr.coord, tr.touching(1, "real"), me)
	tr.send(t, real)

	for _, f := range forged {
		rr := tr.refusal(t)
		if want := "refused: " + f.want; rr.Success || !strings.HasPrefix(rr.Error, want) || rr.ExitCode != -1 ||
			rr.RotationID != "rot-1" || rr.Step != 1 || rr.Host != host || rr.Worker != "w1" {
			t.Errorf("%s: refusal %+v, want error %q", f.name, rr, want)
		}
		if tr.exists(f.file) {
			t.Errorf("%s: the script ran", f.name)
		}
	}
	// The real step ran, and its result is the step's: no refusal took its
	// place (results are deduplicated per step).
	rr := tr.result(t)
	if rr.Step != 1 || !rr.Success {
		t.Fatalf("real step 1: result %+v", rr)
	}
	if !tr.exists("real") {
		t.Fatal("the real step's script did not run")
	}
	stored := tr.storedResult(t, tr.subj.Result("rot-1", 1))
	if !stored.Success {
		t.Fatalf("stored result of step 1 = %+v, want the real step's success", stored)
	}
	// Each refusal is kept in the results stream under its own message id.
	s, err := tr.js.Stream(t.Context(), tr.subj.ResultsStream())
	if err != nil {
		t.Fatal(err)
	}
	last, err := s.GetLastMsgForSubject(t.Context(), tr.subj.Refused(host))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := last.Header.Get(jetstream.MsgIDHeader), messages.RefusedMsgID(seqs["for another host"]); got != want {
		t.Errorf("last refusal's message id %q, want %q", got, want)
	}
	tr.waitDrained(t)

	// (d) The exact message of step 1, published again: a replay.
	if err := os.Remove(filepath.Join(tr.dir, "real")); err != nil {
		t.Fatal(err)
	}
	tr.send(t, real)
	rr = tr.refusal(t)
	if rr.Success || !strings.HasPrefix(rr.Error, "refused: replay: task rot-1-1 was first delivered as message ") || rr.Step != 1 {
		t.Fatalf("replayed task: refusal %+v", rr)
	}

	// (c) Expired but the coordinator's: refused on the step's subject, as
	// without Trust.
	expired := tr.touching(2, "expired")
	expired.ExpiresAt = time.Now().Add(-time.Second)
	tr.send(t, signed(t, tr.coord, expired, me))
	rr = tr.result(t)
	if rr.Step != 2 || rr.Success || !strings.HasPrefix(rr.Error, "refused: task expired") {
		t.Fatalf("expired task: result %+v", rr)
	}
	tr.waitDrained(t)
	for _, f := range []string{"real", "expired"} {
		if tr.exists(f) {
			t.Errorf("%s: the script ran", f)
		}
	}
	select {
	case rr := <-tr.refused:
		t.Fatalf("unexpected refusal %+v", rr)
	case rr := <-tr.results:
		t.Fatalf("unexpected result %+v", rr)
	default:
	}

	// Refusals are logged with the reason and the claim, never the content.
	logs := tr.logs.String()
	if n := strings.Count(logs, "task refused: not the coordinator's task for this worker"); n != len(forged)+1 {
		t.Errorf("%d refusals logged, want %d:\n%s", n, len(forged)+1, logs)
	}
	for _, leak := range []string{secretMarker, "touch", "e30="} {
		if strings.Contains(logs, leak) {
			t.Errorf("logs show %q:\n%s", leak, logs)
		}
	}
}

func (b *bundle) storedResult(t *testing.T, subject string) messages.RotationResult {
	t.Helper()
	s, err := b.js.Stream(t.Context(), b.subj.ResultsStream())
	if err != nil {
		t.Fatal(err)
	}
	// A result seen on its subject may be stored a moment later.
	var msg *jetstream.RawStreamMsg
	workertest.Eventually(t, 10*time.Second, "stored result on "+subject, func() bool {
		msg, err = s.GetLastMsgForSubject(t.Context(), subject)
		return err == nil
	})
	rr, err := messages.DecodeResult(msg.Data)
	if err != nil {
		t.Fatal(err)
	}
	return rr
}

// A redelivery of the message a task was first seen in is not a replay: a
// worker that died after the replay check, before starting the script,
// leaves the task to run on the next delivery.
func TestTrustRedeliveryIsNotAReplay(t *testing.T) {
	t.Parallel()
	tr := setupTrusted(t, config{ackWait: time.Second}, nil)
	tr.send(t, signed(t, tr.coord, tr.touching(1, "redelivered"), tr.trust.CurveKey()))
	msgs, err := tr.consumer.Fetch(1, jetstream.FetchMaxWait(5*time.Second), jetstream.FetchPriorityGroup(messages.PriorityGroup))
	if err != nil {
		t.Fatal(err)
	}
	for msg := range msgs.Messages() {
		// The first delivery passes the replay check, then its worker dies.
		md, err := msg.Metadata()
		if err != nil {
			t.Fatal(err)
		}
		if first, err := tr.w.firstSeen(t.Context(), task(1).ID, md.Sequence.Stream); err != nil || first != md.Sequence.Stream {
			t.Fatalf("firstSeen = %d, %v", first, err)
		}
	}
	start(t, tr.w)
	rr := tr.result(t)
	if !rr.Success || rr.Attempt != 2 || !tr.exists("redelivered") {
		t.Fatalf("result %+v, ran %v", rr, tr.exists("redelivered"))
	}
	tr.waitDrained(t)
}

// Without a started bucket to check replays against, a task is not run but
// delivered again later.
func TestTrustWithoutBucketRetries(t *testing.T) {
	t.Parallel()
	tr := setupTrusted(t, config{noBuckets: true, maxDeliver: -1}, func(o *Options) { o.NakDelay = 100 * time.Millisecond })
	naks := tr.naks(t)
	start(t, tr.w)
	tr.send(t, signed(t, tr.coord, tr.touching(1, "later"), tr.trust.CurveKey()))
	tr.waitNaks(t, naks, 3)
	if tr.exists("later") {
		t.Fatal("the script ran without a replay check")
	}
	tr.createBuckets(t)
	if rr := tr.result(t); !rr.Success {
		t.Fatalf("result %+v", rr)
	}
	if !tr.exists("later") {
		t.Fatal("the script did not run")
	}
	tr.waitDrained(t)
}

// Without Trust a worker warns once at Start and does not run a sealed
// task it cannot open.
func TestWithoutTrustWarnsAndCannotOpen(t *testing.T) {
	t.Parallel()
	logs := new(proctest.Buffer)
	log := zerolog.New(logs)
	w, b := setup(t, config{}, func(o *Options) { o.Logger = &log })
	start(t, w)
	if !strings.Contains(logs.String(), "tasks are not verified: start the worker with credentials") {
		t.Fatalf("no warning at Start:\n%s", logs)
	}
	tk := task(1)
	tk.Secret, tk.SealedSecret = nil, []byte("opaque")
	b.publish(t, tk)
	rr := b.result(t)
	if rr.Success || !strings.Contains(rr.Error, "sealed") {
		t.Fatalf("result %+v", rr)
	}
	if n := len(b.exec.Jobs()); n != 0 {
		t.Fatalf("ran %d scripts", n)
	}
}
