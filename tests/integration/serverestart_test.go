package integration

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/postrotate/postrotate/coordinator/server"
)

// TestServeRestarted stops postrotate serve while a rotation's script runs
// on web-01 and starts it again: the rotation resumes from the stored run
// and completes with every step's result, and the new password is the
// record's.
func TestServeRestarted(t *testing.T) {
	d := setupWith(t, options{inventory: "testdata/hold.yaml"})

	d.exec(d.web01, "touch", "/tmp/hold")
	id := d.rotate("app")
	hold := d.step(id, "hold.sh")
	d.waitFile(d.web01, "/tmp/held", time.Minute)

	timeout := 20 * time.Second
	if err := d.serve.Stop(t.Context(), &timeout); err != nil {
		t.Fatalf("stop serve: %v", err)
	}
	// The step finishes while serve is down: its result waits in the
	// stream.
	results := d.results(id, hold)
	d.exec(d.web01, "rm", "/tmp/hold")
	if res := d.nextResult(results, time.Minute); !res.Success || res.Name != "hold.sh" {
		t.Fatalf("rotation %s: the result of step %d stored while serve is down: %s, success %v, error %q; want hold.sh's success",
			id, hold, res.Name, res.Success, res.Error)
	}
	if err := d.serve.Start(t.Context()); err != nil {
		t.Fatalf("start serve again: %v", err)
	}
	d.waitHealthy(2 * time.Minute)

	r := d.wait(id, 3*time.Minute)
	if r.State != "completed" || r.Effect != "committed" {
		t.Fatalf("rotation %s: state %s, effect %s, want completed and committed: %+v", id, r.State, r.Effect, r.Results)
	}
	// rotate-linux, hold.sh, update-app-config.sh: each once.
	if len(r.Results) != 3 {
		t.Fatalf("rotation %s: %d results, want 3: %+v", id, len(r.Results), r.Results)
	}
	for i, res := range r.Results {
		if !res.Success || res.Step != i+1 {
			t.Errorf("rotation %s result %d: step %d (%s), success %v, error %q", id, i, res.Step, res.Name, res.Success, res.Error)
		}
	}
	if starts := strings.Count(d.exec(d.web01, "cat", "/tmp/hold-starts"), "\n"); starts != 1 {
		t.Errorf("web-01 /tmp/hold-starts: %d starts, want 1", starts)
	}
	conf := d.exec(d.web01, "cat", "/srv/app/app.conf")
	if !strings.Contains(conf, "rotation "+id) {
		t.Errorf("web-01 /srv/app/app.conf does not name rotation %s:\n%s", id, conf)
	}

	// The record holds the new password, and it is app's on web-01.
	var rec server.RecordView
	d.call(http.MethodGet, "/v1/records/app?reveal=true", nil, http.StatusOK, &rec)
	if rec.Password == "" || rec.Password == "App-compose-demo-1" {
		t.Fatalf("record app after the rotation: password not rotated")
	}
	d.checkPassword(d.web01, "app", rec.Password)
}
