package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/postrotate/postrotate/coordinator/rotation"
	"github.com/postrotate/postrotate/coordinator/runs"
	"github.com/postrotate/postrotate/messages"
	"github.com/postrotate/postrotate/worker/workertest"
)

// TestGatewayWorkerKilled kills (SIGKILL) the gateway-1 worker container
// whose SSH session runs a script on ssh-01, while nothing has reported
// the step yet: the other gateway worker gets the task again (a later
// delivery), finds the killed worker's started marker and reports the step
// interrupted, in doubt, without running it, and acknowledges it, so that
// nothing can run it later; the rotation goes on with its next step. When
// the killed worker is back, later rotations complete.
func TestGatewayWorkerKilled(t *testing.T) {
	d := setupWith(t, options{inventory: "testdata/hold.yaml"})

	d.exec(d.ssh01, "touch", "/tmp/hold")
	id := d.rotate("deploy")
	hold := d.step(id, "hold.sh")
	results := d.results(id, hold)
	d.waitFile(d.ssh01, "/tmp/held", time.Minute)

	// Who runs it: the worker whose started marker, written before the
	// script starts, holds the task. No result yet: the step is running.
	started := d.marker(id, hold)
	if started.Attempt != 1 || !started.ReportedAt.IsZero() {
		t.Fatalf("started marker of step %d: %+v, want attempt 1, not reported", hold, started)
	}
	name := started.Worker
	victim, ok := d.gateways[name]
	if !ok {
		t.Fatalf("step %d started by %q, not one of gateway-1's workers %v", hold, name, slices.Sorted(maps.Keys(d.gateways)))
	}
	var survivor string
	for n := range d.gateways {
		if n != name {
			survivor = n
		}
	}
	var before rotation.View
	d.call(http.MethodGet, "/v1/rotations/"+id, nil, http.StatusOK, &before)
	if before.State != runs.StateRunning || slices.ContainsFunc(before.Results, func(r messages.RotationResult) bool { return r.Step == hold }) {
		t.Fatalf("rotation %s before the kill: state %s, results %+v; want running, step %d not reported", id, before.State, before.Results, hold)
	}

	t.Logf("hold.sh runs over SSH from %s: killing it", name)
	if _, err := d.docker.ContainerKill(t.Context(), victim.GetContainerID(), client.ContainerKillOptions{Signal: "KILL"}); err != nil {
		t.Fatalf("kill %s: %v", name, err)
	}
	exited := d.docker.ContainerWait(t.Context(), victim.GetContainerID(), client.ContainerWaitOptions{Condition: container.WaitConditionNotRunning})
	select {
	case <-exited.Result:
	case err := <-exited.Error:
		t.Fatalf("wait for %s to exit: %v", name, err)
	}
	killedAt := time.Now()

	// The step's result: the survivor's, at a later delivery, in doubt,
	// naming the killed worker's start.
	res := d.nextResult(results, 3*time.Minute)
	t.Logf("step %d reported %s after the kill, at attempt %d", hold, time.Since(killedAt).Round(time.Second), res.Attempt)
	want := fmt.Sprintf("in doubt: interrupted: the script was started by worker %q at %s (attempt 1) and its outcome is unknown; not run again",
		name, started.StartedAt.UTC().Format(time.RFC3339))
	if res.Success || !strings.HasPrefix(res.Error, want) || res.Worker != survivor || res.Attempt < 2 || res.Host != "gateway-1" {
		t.Fatalf("step %d (hold.sh): success %v, error %q, worker %s, attempt %d, host %s;\nwant error %q..., by %s at attempt 2 or later on gateway-1",
			hold, res.Success, res.Error, res.Worker, res.Attempt, res.Host, want, survivor)
	}

	// The rotation goes on: rotate-linux, hold.sh, record-rotation.sh.
	r := d.wait(id, 3*time.Minute)
	if r.State != runs.StateFailed {
		t.Fatalf("rotation %s: state %s, want failed (an interrupted step): %+v", id, r.State, r.Results)
	}
	if len(r.Results) != 3 {
		t.Fatalf("rotation %s: %d results, want 3: %+v", id, len(r.Results), r.Results)
	}
	for _, rr := range r.Results {
		switch {
		case rr.Step == hold:
			if rr.Error != res.Error || rr.Worker != res.Worker {
				t.Errorf("step %d (hold.sh) in the API: worker %s, error %q; want the survivor's %q", rr.Step, rr.Worker, rr.Error, res.Error)
			}
		case !rr.Success:
			t.Errorf("step %d (%s): success false, error %q", rr.Step, rr.Name, rr.Error)
		}
	}

	// Not run twice, and nothing can run it later: the marker is still the
	// killed worker's (a run writes its own first), and the task has left
	// gateway-1's queue (an acknowledgement publishes no event: polled).
	if m := d.marker(id, hold); m != started {
		t.Errorf("started marker of step %d after the in-doubt report: %+v, want the killed worker's %+v", hold, m, started)
	}
	workertest.Eventually(t, time.Minute, "gateway-1's task queue empty", func() bool { return d.queued("gateway-1") == 0 })
	// The killed worker's script, an orphan of its dropped session, ends
	// once released; then the starts on ssh-01 are final.
	d.exec(d.ssh01, "rm", "-f", "/tmp/hold")
	workertest.Eventually(t, time.Minute, "hold.sh ended on ssh-01", func() bool {
		code, _, err := d.ssh01.Exec(t.Context(), []string{"pgrep", "-f", "hold.sh"})
		return err == nil && code == 1 // no process
	})
	if starts, want := strings.TrimSpace(d.exec(d.ssh01, "cat", "/tmp/hold-starts")), fmt.Sprintf("%s %d 1", id, hold); starts != want {
		t.Errorf("ssh-01 /tmp/hold-starts: %q, want the one start %q (rotation, step, attempt)", starts, want)
	}
	if n := strings.Count(d.exec(d.ssh01, "cat", "/home/admin/rotations.log"), "password of deploy rotated"); n != 1 {
		t.Errorf("ssh-01 ~admin/rotations.log: %d rotations of deploy, want 1", n)
	}

	// The killed worker returns; later rotations work, through either
	// gateway worker.
	restarted := time.Now()
	if err := victim.Start(t.Context()); err != nil {
		t.Fatalf("restart %s: %v", name, err)
	}
	d.waitWorkersStarted(time.Minute, restarted.Add(-time.Second), name)
	for i := 0; i < 2; i++ {
		id2 := d.rotate("deploy")
		r2 := d.wait(id2, 3*time.Minute)
		if r2.State != runs.StateCompleted || len(r2.Results) != 3 {
			t.Fatalf("rotation %s after the restart: state %s, %d results: %+v", id2, r2.State, len(r2.Results), r2.Results)
		}
	}
	if starts := strings.Count(d.exec(d.ssh01, "cat", "/tmp/hold-starts"), "\n"); starts != 3 {
		t.Errorf("ssh-01 /tmp/hold-starts: %d starts, want 3 (one per rotation)", starts)
	}
	if n := strings.Count(d.exec(d.ssh01, "cat", "/home/admin/rotations.log"), "password of deploy rotated"); n != 3 {
		t.Errorf("ssh-01 ~admin/rotations.log: %d rotations of deploy, want 3", n)
	}
}

// marker reads the started marker of step of rotation id.
func (d *deployment) marker(id string, step int) messages.StartedMarker {
	d.t.Helper()
	ctx, cancel := context.WithTimeout(d.t.Context(), 30*time.Second)
	defer cancel()
	kv, err := d.js.KeyValue(ctx, d.subj.StartedBucket())
	if err != nil {
		d.t.Fatalf("open the started bucket: %v", err)
	}
	// The task id is "<rotation>-<step>", the key its host token.
	key := messages.HostToken(fmt.Sprintf("%s-%d", id, step))
	e, err := kv.Get(ctx, key)
	if err != nil {
		d.t.Fatalf("started marker of rotation %s step %d: %v", id, step, err)
	}
	var m messages.StartedMarker
	if err := json.Unmarshal(e.Value(), &m); err != nil {
		d.t.Fatalf("started marker %s: %v", key, err)
	}
	return m
}

// queued counts the tasks of host in the task queue: published and not
// yet acknowledged; -1 when it cannot tell.
func (d *deployment) queued(host string) int {
	ctx, cancel := context.WithTimeout(d.t.Context(), 10*time.Second)
	defer cancel()
	s, err := d.js.Stream(ctx, d.subj.TasksStream())
	if err != nil {
		return -1
	}
	subject := d.subj.Tasks(host)
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(subject))
	if err != nil {
		return -1
	}
	return int(info.State.Subjects[subject])
}
