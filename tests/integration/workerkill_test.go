package integration

import (
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/client"
	"github.com/testcontainers/testcontainers-go"
)

// TestGatewayWorkerKilled kills (SIGKILL) the gateway-1 worker container
// whose SSH session runs a script on ssh-01: the other gateway worker gets
// the task again, finds that the script was started and reports the step
// interrupted, in doubt, without running it twice; the rotation goes on
// with its next step. When the killed worker is back, a later rotation
// completes.
func TestGatewayWorkerKilled(t *testing.T) {
	d := setupWith(t, options{inventory: "testdata/hold.yaml"})

	d.exec(d.ssh01, "touch", "/tmp/hold")
	id := d.rotate("deploy")
	d.waitFile(d.ssh01, "/tmp/held", time.Minute)

	// Which gateway worker runs it: the one that logged its start.
	name, victim := d.startedBy(id, "hold.sh", d.gateways)
	t.Logf("hold.sh runs over SSH from %s: killing it", name)
	if _, err := d.docker.ContainerKill(t.Context(), victim.GetContainerID(), client.ContainerKillOptions{Signal: "KILL"}); err != nil {
		t.Fatalf("kill %s: %v", name, err)
	}
	killedAt := time.Now()

	// The step stays held on ssh-01 (an orphan of the dropped session) until
	// released; its outcome is unknown to postrotate.
	r := d.wait(id, 3*time.Minute)
	t.Logf("rotation %s finished %s after the kill", id, time.Since(killedAt).Round(time.Second))
	d.exec(d.ssh01, "rm", "-f", "/tmp/hold")

	if r.State != "failed" {
		t.Fatalf("rotation %s: state %s, want failed (an interrupted step): %+v", id, r.State, r.Results)
	}
	// rotate-linux, hold.sh, record-rotation.sh.
	if len(r.Results) != 3 {
		t.Fatalf("rotation %s: %d results, want 3: %+v", id, len(r.Results), r.Results)
	}
	for _, res := range r.Results {
		switch res.Name {
		case "hold.sh":
			if res.Success || !strings.Contains(res.Error, "in doubt: interrupted") || !strings.Contains(res.Error, name) {
				t.Errorf("step %d (hold.sh): success %v, error %q; want in doubt, interrupted, naming %s", res.Step, res.Success, res.Error, name)
			}
			if res.Worker == name {
				t.Errorf("step %d (hold.sh): reported by %s, which was killed", res.Step, res.Worker)
			}
		default:
			if !res.Success {
				t.Errorf("step %d (%s): success false, error %q", res.Step, res.Name, res.Error)
			}
		}
	}
	// Not run twice: one start on ssh-01, also a while after the release.
	time.Sleep(2 * time.Second)
	if starts := strings.Fields(d.exec(d.ssh01, "cat", "/tmp/hold-starts")); len(starts) != 3 || starts[0] != id {
		t.Errorf("ssh-01 /tmp/hold-starts: %q, want one start of rotation %s", starts, id)
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
		if r2.State != "completed" || len(r2.Results) != 3 {
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

// startedBy returns the worker of cs that logged the start of script in
// rotation id ("script started", which a worker logs before it runs one).
func (d *deployment) startedBy(id, script string, cs map[string]testcontainers.Container) (string, testcontainers.Container) {
	d.t.Helper()
	var found []string
	for name, c := range cs {
		for _, line := range strings.Split(d.logs(c), "\n") {
			if strings.Contains(line, `"script started"`) && strings.Contains(line, `"rotation_id":"`+id+`"`) &&
				strings.Contains(line, `"script":"`+script+`"`) {
				found = append(found, name)
				break
			}
		}
	}
	if len(found) != 1 {
		d.t.Fatalf("workers of %v that logged the start of %s in rotation %s: %v, want one", slices.Sorted(maps.Keys(cs)), script, id, found)
	}
	return found[0], cs[found[0]]
}
