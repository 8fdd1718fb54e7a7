package integration

import (
	"slices"
	"strings"
	"testing"
	"time"
)

// TestRotationAcrossHosts rotates, in parallel, the password of app on
// web-01 (its own worker, as root) and of deploy on ssh-01 (over SSH from
// the gateway-1 workers), and checks the results and what the scripts did
// on the machines.
func TestRotationAcrossHosts(t *testing.T) {
	d := setup(t)
	appShadow := d.exec(d.web01, "getent", "shadow", "app")
	deployShadow := d.exec(d.ssh01, "getent", "shadow", "deploy")

	app := d.rotate("app")
	deploy := d.rotate("deploy")

	for _, tc := range []struct {
		id, host string
		workers  []string
	}{
		{app, "web-01", []string{"web-01"}},
		{deploy, "gateway-1", []string{"gateway-1a", "gateway-1b"}},
	} {
		r := d.wait(tc.id, 3*time.Minute)
		if r.State != "completed" {
			t.Fatalf("rotation %s: state %s, want completed: %+v", tc.id, r.State, r.Results)
		}
		if len(r.Results) != 2 {
			t.Fatalf("rotation %s: %d results, want 2 (chpasswd and the script): %+v", tc.id, len(r.Results), r.Results)
		}
		for _, res := range r.Results {
			if !res.Success || res.ExitCode != 0 || res.Error != "" {
				t.Errorf("rotation %s step %d (%s): success %v, exit %d, error %q", tc.id, res.Step, res.Name, res.Success, res.ExitCode, res.Error)
			}
			if res.Host != tc.host {
				t.Errorf("rotation %s step %d: host %q, want %q", tc.id, res.Step, res.Host, tc.host)
			}
			if !slices.Contains(tc.workers, res.Worker) {
				t.Errorf("rotation %s step %d: worker %q, want one of %v", tc.id, res.Step, res.Worker, tc.workers)
			}
		}
	}

	// What the scripts did.
	conf := d.exec(d.web01, "cat", "/srv/app/app.conf")
	if !strings.Contains(conf, "user = app") || !strings.Contains(conf, "rotation "+app) {
		t.Errorf("web-01 /srv/app/app.conf does not name app and rotation %s:\n%s", app, conf)
	}
	log := d.exec(d.ssh01, "cat", "/home/admin/rotations.log")
	if n := strings.Count(log, "password of deploy rotated"); n != 1 {
		t.Errorf("ssh-01 ~admin/rotations.log: %d rotations of deploy, want 1:\n%s", n, log)
	}
	// chpasswd ran: the users' shadow entries changed.
	if after := d.exec(d.web01, "getent", "shadow", "app"); after == appShadow {
		t.Errorf("web-01: the shadow entry of app did not change")
	}
	if after := d.exec(d.ssh01, "getent", "shadow", "deploy"); after == deployShadow {
		t.Errorf("ssh-01: the shadow entry of deploy did not change")
	}
}
