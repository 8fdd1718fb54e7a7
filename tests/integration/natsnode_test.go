package integration

import (
	"strings"
	"testing"
	"time"
)

// TestNATSNodeLost stops one of the three NATS nodes while a rotation's
// script runs: the rotation completes, with every step's result.
func TestNATSNodeLost(t *testing.T) {
	d := setupWith(t, options{inventory: "testdata/hold.yaml"})

	d.exec(d.web01, "touch", "/tmp/hold")
	id := d.rotate("app")
	d.waitFile(d.web01, "/tmp/held", time.Minute)

	timeout := 5 * time.Second
	if err := d.nats["nats-1"].Stop(t.Context(), &timeout); err != nil {
		t.Fatalf("stop nats-1: %v", err)
	}
	d.exec(d.web01, "rm", "/tmp/hold")

	r := d.wait(id, 3*time.Minute)
	if r.State != "completed" {
		t.Fatalf("rotation %s: state %s, want completed: %+v", id, r.State, r.Results)
	}
	// chpasswd, hold.sh, update-app-config.sh: nothing lost.
	if len(r.Results) != 3 {
		t.Fatalf("rotation %s: %d results, want 3: %+v", id, len(r.Results), r.Results)
	}
	for _, res := range r.Results {
		if !res.Success || res.Error != "" {
			t.Errorf("rotation %s step %d (%s): success %v, error %q", id, res.Step, res.Name, res.Success, res.Error)
		}
	}
	conf := d.exec(d.web01, "cat", "/srv/app/app.conf")
	if !strings.Contains(conf, "rotation "+id) {
		t.Errorf("web-01 /srv/app/app.conf does not name rotation %s:\n%s", id, conf)
	}
}
