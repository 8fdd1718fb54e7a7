package integration

import (
	"slices"
	"strings"
	"testing"
	"time"

	mobynet "github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"
)

// TestSSHMachineDisconnected takes ssh-01 off the network after a first
// rotation left gateway-1 an open SSH connection to it: the next rotation
// of deploy (over SSH from gateway-1) fails at its first step within the
// step's deadline, with an error naming ssh-01, and its script does not
// run; the rotation of app on web-01, started at the same time, completes.
// Back on the network, ssh-01's rotations work again.
func TestSSHMachineDisconnected(t *testing.T) {
	d := setup(t)
	if r := d.wait(d.rotate("deploy"), 3*time.Minute); r.State != "completed" {
		t.Fatalf("first rotation of deploy: state %s: %+v", r.State, r.Results)
	}
	deployShadow := d.exec(d.ssh01, "getent", "shadow", "deploy")

	ssh01 := d.ssh01.GetContainerID()
	if _, err := d.docker.NetworkDisconnect(t.Context(), d.net.ID, client.NetworkDisconnectOptions{Container: ssh01, Force: true}); err != nil {
		t.Fatalf("disconnect ssh-01: %v", err)
	}
	start := time.Now()
	deploy := d.rotate("deploy")
	app := d.rotate("app")

	r := d.wait(deploy, 5*time.Minute)
	took := time.Since(start)
	t.Logf("rotation of deploy failed after %s, effect %s: %+v", took.Round(100*time.Millisecond), r.Effect, r.Results)
	if r.State != "failed" {
		t.Fatalf("rotation %s of deploy: state %s, want failed: %+v", deploy, r.State, r.Results)
	}
	if len(r.Results) == 0 {
		t.Fatalf("rotation %s of deploy: no results", deploy)
	}
	first := r.Results[0]
	if first.Step != 1 || first.Success || !strings.Contains(first.Error, "ssh-01") {
		t.Errorf("rotation %s step %d (%s): success %v, error %q; want step 1 failed, naming ssh-01", deploy, first.Step, first.Name, first.Success, first.Error)
	}
	// Failed by the gateway worker finding the machine gone (the SSH
	// keepalive finds the open connection dead, a new dial gives up), not
	// by the step's deadline passing (2 minutes): the worker reported it,
	// and not as a timeout. (How long that took is logged, not asserted.)
	t.Logf("step 1 of deploy failed after %s", first.FinishedAt.Sub(first.StartedAt).Round(100*time.Millisecond))
	if !slices.Contains([]string{"gateway-1a", "gateway-1b"}, first.Worker) || strings.Contains(first.Error, "timed out after") {
		t.Errorf("rotation %s step 1: worker %q, error %q; want a gateway-1 worker's report of the lost machine, not a timeout", deploy, first.Worker, first.Error)
	}
	for _, res := range r.Results[1:] {
		if res.Name == "record-rotation.sh" && (res.Worker != "" || !strings.HasPrefix(res.Error, "not run")) {
			t.Errorf("rotation %s ran the script on ssh-01 after its rotation step failed: %+v", deploy, res)
		}
	}

	ra := d.wait(app, 3*time.Minute)
	if ra.State != "completed" || len(ra.Results) != 2 {
		t.Fatalf("rotation %s of app on web-01: state %s, %d results, want completed with 2: %+v", app, ra.State, len(ra.Results), ra.Results)
	}

	// Back on the network (under its name), ssh-01 works again.
	if _, err := d.docker.NetworkConnect(t.Context(), d.net.ID, client.NetworkConnectOptions{
		Container:      ssh01,
		EndpointConfig: &mobynet.EndpointSettings{Aliases: []string{"ssh-01"}},
	}); err != nil {
		t.Fatalf("reconnect ssh-01: %v", err)
	}
	if after := d.exec(d.ssh01, "getent", "shadow", "deploy"); after != deployShadow {
		t.Errorf("ssh-01: the shadow entry of deploy changed while it was disconnected")
	}
	again := d.rotate("deploy")
	if r := d.wait(again, 3*time.Minute); r.State != "completed" || len(r.Results) != 2 {
		t.Fatalf("rotation %s of deploy after the reconnection: state %s, %d results: %+v", again, r.State, len(r.Results), r.Results)
	}
	if n := strings.Count(d.exec(d.ssh01, "cat", "/home/admin/rotations.log"), "password of deploy rotated"); n != 2 {
		t.Errorf("ssh-01 ~admin/rotations.log: %d rotations of deploy, want 2 (before and after)", n)
	}
}
