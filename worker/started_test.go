package worker

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/postrotate/postrotate/executor"
	"github.com/postrotate/postrotate/messages"
)

// marker reads a task's started marker.
func (b *bundle) marker(t *testing.T, taskID string) messages.StartedMarker {
	t.Helper()
	e, err := b.kv(t, b.subj.StartedBucket()).Get(t.Context(), startedKey(taskID))
	if err != nil {
		t.Fatalf("started marker of %s: %v", taskID, err)
	}
	var m messages.StartedMarker
	if err := json.Unmarshal(e.Value(), &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func (b *bundle) putMarker(t *testing.T, taskID string, value []byte) {
	t.Helper()
	if _, err := b.kv(t, b.subj.StartedBucket()).Create(t.Context(), startedKey(taskID), value); err != nil {
		t.Fatal(err)
	}
}

// A worker killed mid-script leaves its started marker: the redelivered task
// runs again only when the script allows it.
func TestInterruptedScript(t *testing.T) {
	t.Parallel()
	for _, retry := range []bool{false, true} {
		t.Run(fmt.Sprintf("retry_on_interrupt=%v", retry), func(t *testing.T) {
			t.Parallel()
			w, b := setup(t, config{ackWait: time.Second}, nil)
			nc, js := b.connect(t)
			running, release := make(chan struct{}), make(chan struct{})
			killed := &fakeExecutor{run: func(ctx context.Context, job executor.Job) (executor.Result, error) {
				close(running)
				select {
				case <-release:
				case <-ctx.Done():
				}
				return executor.Result{}, nil
			}}
			w0 := b.worker(t, js, killed, func(o *Options) { o.Name = "w0"; o.PublishTimeout = 100 * time.Millisecond })
			start(t, w0)
			t.Cleanup(func() { close(release) }) // before w0 is stopped
			tk := task(1)
			tk.Script.RetryOnInterrupt = retry
			b.publish(t, tk)
			select {
			case <-running:
			case <-time.After(20 * time.Second):
				t.Fatal("first worker did not start the script")
			}
			m0 := b.marker(t, tk.ID)
			if m0.Worker != "w0" || m0.Attempt != 1 || !m0.ReportedAt.IsZero() {
				t.Fatalf("marker of the running script = %+v", m0)
			}
			nc.Close() // w0 dies: no ack, no result

			start(t, w)
			rr := b.result(t)
			b.waitDrained(t)
			m := b.marker(t, tk.ID)
			if !retry {
				want := fmt.Sprintf(`in doubt: interrupted: the script was started by worker "w0" at %s (attempt 1) and its outcome is unknown; `+
					"not run again (set retry_on_interrupt: true on the attachment to allow it)", m0.StartedAt.UTC().Format(time.RFC3339))
				// Attempt 2, or later when a loaded machine let the ack
				// deadline pass once more before w1 took it.
				if rr.Success || rr.Error != want || rr.Attempt < 2 || rr.Worker != "w1" {
					t.Fatalf("result = %+v\nwant error %q", rr, want)
				}
				if n := len(b.exec.Jobs()); n != 0 {
					t.Fatalf("in-doubt task ran %d scripts", n)
				}
				if m != m0 {
					t.Fatalf("marker changed to %+v", m)
				}
				return
			}
			if !rr.Success || rr.Attempt < 2 || rr.Worker != "w1" {
				t.Fatalf("result = %+v", rr)
			}
			if n := len(b.exec.Jobs()); n != 1 {
				t.Fatalf("script ran %d times on the second worker", n)
			}
			if m.Worker != "w1" || m.Attempt != rr.Attempt || m.ReportedAt.IsZero() {
				t.Fatalf("marker after the rerun = %+v", m)
			}
		})
	}
}

func TestStartedMarkerCases(t *testing.T) {
	t.Parallel()
	w, b := setup(t, config{}, nil)
	startedAt := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	interrupted, _ := json.Marshal(messages.StartedMarker{Worker: "w0", Host: host, Attempt: 1, StartedAt: startedAt})
	reported, _ := json.Marshal(messages.StartedMarker{Worker: "w0", Host: host, Attempt: 1, StartedAt: startedAt, ReportedAt: startedAt})

	// Expired after an interruption: in doubt, even when retry is allowed.
	expired := task(1)
	expired.Script.RetryOnInterrupt = true
	expired.ExpiresAt = time.Now().Add(-time.Second)
	b.putMarker(t, expired.ID, interrupted)
	// Run and reported, but its ack was lost: acked, nothing published.
	done := task(2)
	done.Script.RetryOnInterrupt = true
	b.putMarker(t, done.ID, reported)
	// A marker that cannot be decoded still says the script started.
	garbled := task(3)
	b.putMarker(t, garbled.ID, []byte("{not json"))
	fresh := task(4)
	for _, tk := range []messages.Task{expired, done, garbled, fresh} {
		b.publish(t, tk)
	}
	start(t, w)

	rr := b.result(t)
	if want := `in doubt: interrupted: the script was started by worker "w0" at 2025-01-02T03:04:05Z (attempt 1) and its outcome is unknown; not run again: the task expired at`; rr.Step != 1 || rr.Success || !strings.HasPrefix(rr.Error, want) {
		t.Fatalf("expired interrupted task: %+v", rr)
	}
	// Results come in task order: the next is step 3's, step 2 published none.
	if rr = b.result(t); rr.Step != 3 || rr.Success || !strings.HasPrefix(rr.Error, `in doubt: interrupted: the script was started by worker "(unreadable marker)"`) {
		t.Fatalf("task with a garbled marker: %+v", rr)
	}
	if rr = b.result(t); rr.Step != 4 || !rr.Success {
		t.Fatalf("fresh task: %+v", rr)
	}
	b.waitDrained(t)
	if jobs := b.exec.Jobs(); len(jobs) != 1 || jobs[0].Step != 4 {
		t.Fatalf("jobs = %+v, want only step 4", jobs)
	}
}

var kvKey = regexp.MustCompile(`^[-/_=.a-zA-Z0-9]+$`)

func TestStartedKey(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct{ id, want string }{
		{"0194d3c2-7a1b-7c3e-9f00-0123456789ab-3", "0194d3c2-7a1b-7c3e-9f00-0123456789ab-3"},
		{"rot_1-2", "rot_5F1-2"},
		{"a.b c*>", "a_2Eb_20c_2A_3E"},
	} {
		got := startedKey(tt.id)
		if got != tt.want || !kvKey.MatchString(got) {
			t.Errorf("startedKey(%q) = %q, want %q (a valid KV key)", tt.id, got, tt.want)
		}
	}
}

// A worker that bound the started bucket while its stream allowed direct
// gets keeps working once the coordinator turns them off (leader reads,
// messages/consistent): its first read finds no responders, it binds
// again and reads from the leader.
func TestStartedBucketDirectGetsTurnedOff(t *testing.T) {
	t.Parallel()
	w, b := setup(t, config{}, func(o *Options) { o.NakDelay = 50 * time.Millisecond })
	start(t, w)
	b.publish(t, task(1))
	if rr := b.result(t); !rr.Success {
		t.Fatalf("first task: %+v", rr)
	}

	ctx := t.Context()
	s, err := b.js.Stream(ctx, "KV_"+b.subj.StartedBucket())
	if err != nil {
		t.Fatal(err)
	}
	cfg := s.CachedInfo().Config
	if !cfg.AllowDirect {
		t.Fatal("the test bucket does not allow direct gets to begin with")
	}
	cfg.AllowDirect = false
	if _, err := b.js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}

	// A marker of an unreported start: deciding needs a read.
	tk := task(2)
	started, _ := json.Marshal(messages.StartedMarker{Worker: "w0", Host: host, Attempt: 1, StartedAt: time.Now()})
	b.putMarker(t, tk.ID, started)
	b.publish(t, tk)
	if rr := b.result(t); rr.Success || !strings.HasPrefix(rr.Error, `in doubt: interrupted: the script was started by worker "w0"`) {
		t.Fatalf("second task: %+v, want in doubt", rr)
	}
	b.waitDrained(t)
}
