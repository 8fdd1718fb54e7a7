package dispatch

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/postrotate/postrotate/coordinator/rotation"
	"github.com/postrotate/postrotate/messages"
	"github.com/postrotate/postrotate/messages/layout"
	"github.com/postrotate/postrotate/worker/workertest"
)

// A task that reaches MaxDeliver (a worker that takes it and never acks)
// becomes a failed step, and leaves the work queue.
func TestMaxDeliveriesFailsStep(t *testing.T) {
	t.Parallel()
	t.Run("unsigned", func(t *testing.T) { t.Parallel(); testMaxDeliveries(t, false) })
	t.Run("signed", func(t *testing.T) { t.Parallel(); testMaxDeliveries(t, true) })
}

// testMaxDeliveries runs TestMaxDeliveriesFailsStep; signed, the dispatcher
// has a Signer and a forged task claiming the same step reaches
// MaxDeliver first: it is removed without speaking for the step.
func testMaxDeliveries(t *testing.T, signed bool) {
	b := setup(t, false)
	layout := layout.Layout{AckWait: 300 * time.Millisecond, MaxDeliver: 2, PinnedTTL: 300 * time.Millisecond}
	if err := layout.EnsureHosts(t.Context(), b.js, "gw-1"); err != nil {
		t.Fatal(err)
	}
	opts := Options{Subjects: layout.Subjects}
	id := rotation.NewID()
	if signed {
		coord, trust := identity(t)
		opts.Signer, opts.WorkerKey = coord, keyOf(trust)
		publishForgedTask(t, b.js, id)
	}
	d := New(b.js, opts)
	stop, err := d.WatchMaxDeliveries()
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	startBrokenWorker(t, b.js)

	out, err := engine(d, 0).Run(t.Context(), rotation.Rotation{ID: id, Plan: b.plan, NewPassword: "n", OldPassword: "o"})
	if err != nil {
		t.Fatal(err)
	}
	if out.Failed != 1 || !strings.Contains(out.Results[0].Error, `to host "gw-1" without being acknowledged (max deliveries)`) {
		t.Fatalf("outcome = %+v", out.Results)
	}
	waitTasksGone(t, b.js)
}

// publishForgedTask publishes, unsigned, a task for gw-1 claiming step 1
// of rotation id.
func publishForgedTask(t *testing.T, js jetstream.JetStream, id string) {
	t.Helper()
	forged, _ := json.Marshal(messages.Task{SchemaVersion: messages.SchemaVersion, ID: id + "-1", RotationID: id, Step: 1, Host: "forged-host"})
	if _, err := js.Publish(t.Context(), "postrotate.tasks.gw-1", forged); err != nil {
		t.Fatal(err)
	}
}

// startBrokenWorker starts a broken worker of gw-1 until the test ends: it
// takes every delivery and never answers.
func startBrokenWorker(t *testing.T, js jetstream.JetStream) {
	t.Helper()
	cons, err := js.Consumer(t.Context(), "POSTROTATE_TASKS", "host_gw-1")
	if err != nil {
		t.Fatal(err)
	}
	var fetching sync.WaitGroup
	t.Cleanup(fetching.Wait) // after cancel: a fetch ends within its max wait
	ctx, cancel := context.WithCancel(t.Context())
	t.Cleanup(cancel)
	fetching.Go(func() {
		for ctx.Err() == nil {
			batch, err := cons.Fetch(1, jetstream.FetchMaxWait(time.Second), jetstream.FetchPriorityGroup(messages.PriorityGroup))
			if err != nil {
				continue
			}
			for range batch.Messages() {
			}
		}
	})
}

// waitTasksGone waits for the tasks stream to hold no message: a work
// queue drained by acks and deletes announces it nowhere, so it is polled.
func waitTasksGone(t *testing.T, js jetstream.JetStream) {
	t.Helper()
	s, err := js.Stream(t.Context(), "POSTROTATE_TASKS")
	if err != nil {
		t.Fatal(err)
	}
	workertest.Eventually(t, 10*time.Second, "no task left in the queue", func() bool {
		info, err := s.Info(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		return info.State.Msgs == 0
	})
}
