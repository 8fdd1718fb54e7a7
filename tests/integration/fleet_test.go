package integration

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/postrotate/postrotate/coordinator/rotation"
	"github.com/postrotate/postrotate/coordinator/server"
)

// The fleet: fleetUsers users on web-01 (its own worker) and as many on
// ssh-01 (over SSH from gateway-1), each rotated fleetRounds times one
// after the other, all users at once: 200 general rotations, 400 steps.
const (
	fleetUsers  = 5
	fleetRounds = 20
)

// TestFleetWhileWorkerRestarts runs 200 rotations over every host and
// restarts web-01 (its only worker stops gracefully, then starts again)
// once a quarter of them are done. Every rotation completes with all its
// results; each host ran its steps one at a time, each rotation's in step
// order, and in the order its results report, which is the order the
// scripts left in the machines' /tmp/steps.log; each user's password is
// the record's.
func TestFleetWhileWorkerRestarts(t *testing.T) {
	var webUsers, sshUsers []string
	for i := 1; i <= fleetUsers; i++ {
		webUsers = append(webUsers, fmt.Sprintf("app-%d", i))
		sshUsers = append(sshUsers, fmt.Sprintf("deploy-%d", i))
	}
	inv := filepath.Join(t.TempDir(), "inventory.yaml")
	if err := os.WriteFile(inv, []byte(fleetInventory(webUsers, sshUsers)), 0o644); err != nil {
		t.Fatal(err)
	}
	d := setupWith(t, options{inventory: inv, webUsers: webUsers, sshUsers: sshUsers})

	var (
		mu      sync.Mutex
		done    []rotation.View
		ndone   atomic.Int64
		quarter = make(chan struct{})
		once    sync.Once
		wg      sync.WaitGroup
	)
	total := 2 * fleetUsers * fleetRounds
	start := time.Now()
	for _, user := range append(slices.Clone(webUsers), sshUsers...) {
		wg.Go(func() {
			prev := ""
			for round := 0; round < fleetRounds; round++ {
				id, err := d.tryRotate(user)
				if err != nil {
					t.Errorf("rotate %s (round %d, the previous rotation %s seen finished): %v", user, round, prev, err)
					return
				}
				prev = id
				r, err := d.tryWait(id, 5*time.Minute)
				if err != nil {
					t.Errorf("rotation %s of %s: %v", id, user, err)
					return
				}
				mu.Lock()
				done = append(done, r)
				mu.Unlock()
				if ndone.Add(1) == int64(total/4) {
					once.Do(func() { close(quarter) })
				}
			}
		})
	}

	select {
	case <-quarter:
	case <-time.After(5 * time.Minute):
		t.Fatalf("a quarter of the rotations not done after 5 minutes (%d)", ndone.Load())
	}
	stopped := time.Now()
	timeout := 30 * time.Second
	if err := d.web01.Stop(t.Context(), &timeout); err != nil {
		t.Fatalf("stop web-01: %v", err)
	}
	if err := d.web01.Start(t.Context()); err != nil {
		t.Fatalf("start web-01 again: %v", err)
	}
	d.waitWorkersStarted(time.Minute, stopped, "web-01")
	t.Logf("web-01 restarted after %d rotations, back after %s", total/4, time.Since(stopped).Round(100*time.Millisecond))
	wg.Wait()
	t.Logf("%d rotations in %s", len(done), time.Since(start).Round(100*time.Millisecond))
	if t.Failed() {
		t.FailNow()
	}
	if len(done) != total {
		t.Fatalf("%d rotations done, want %d", len(done), total)
	}

	// Every rotation: completed, committed, its two steps in order.
	type ran struct {
		r    rotation.View
		step int // index in r.Results
	}
	byHost := map[string][]ran{}
	for _, r := range done {
		if r.State != "completed" || r.Effect != "committed" || len(r.Results) != 2 {
			t.Errorf("rotation %s of %s: state %s, effect %s, %d results, want completed, committed, 2: %+v", r.ID, r.User, r.State, r.Effect, len(r.Results), r.Results)
			continue
		}
		for i, res := range r.Results {
			if !res.Success || res.Step != i+1 {
				t.Errorf("rotation %s of %s: result %d is step %d (%s), success %v, error %q", r.ID, r.User, i, res.Step, res.Name, res.Success, res.Error)
			}
			byHost[res.Host] = append(byHost[res.Host], ran{r, i})
		}
		if first, second := r.Results[0], r.Results[1]; second.StartedAt.Before(first.FinishedAt) {
			t.Errorf("rotation %s: step 2 started at %s, before step 1 finished at %s", r.ID, second.StartedAt, first.FinishedAt)
		}
	}
	if t.Failed() {
		t.FailNow()
	}

	// Per host: one step at a time, and the scripts' log in the same order.
	for host, machine := range map[string]struct {
		name string
		log  func() string
	}{
		"web-01":    {"web-01", func() string { return d.exec(d.web01, "cat", "/tmp/steps.log") }},
		"gateway-1": {"ssh-01", func() string { return d.exec(d.ssh01, "cat", "/tmp/steps.log") }},
	} {
		steps := byHost[host]
		if len(steps) != 2*fleetUsers*fleetRounds {
			t.Errorf("host %s: %d steps, want %d", host, len(steps), 2*fleetUsers*fleetRounds)
		}
		slices.SortFunc(steps, func(a, b ran) int {
			return a.r.Results[a.step].StartedAt.Compare(b.r.Results[b.step].StartedAt)
		})
		var want []string
		for i, s := range steps {
			res := s.r.Results[s.step]
			if i > 0 {
				prev := steps[i-1].r.Results[steps[i-1].step]
				if res.StartedAt.Before(prev.FinishedAt) {
					t.Errorf("host %s: step %d of rotation %s started at %s, before step %d of rotation %s finished at %s",
						host, res.Step, s.r.ID, res.StartedAt, prev.Step, steps[i-1].r.ID, prev.FinishedAt)
				}
			}
			if res.Name == "log-step.sh" {
				want = append(want, fmt.Sprintf("%s %d %s %s", s.r.ID, res.Step, s.r.User, machine.name))
			}
		}
		got := strings.Split(strings.TrimSpace(machine.log()), "\n")
		if !slices.Equal(got, want) {
			t.Errorf("%s /tmp/steps.log (%d lines) differs from its results in start order (%d):\n%s",
				machine.name, len(got), len(want), firstDifference(got, want))
		}
	}

	// Each user's password is the record's.
	for _, user := range append(slices.Clone(webUsers), sshUsers...) {
		var rec server.RecordView
		d.call(http.MethodGet, "/v1/records/"+user+"?reveal=true", nil, http.StatusOK, &rec)
		machine := d.web01
		if strings.HasPrefix(user, "deploy-") {
			machine = d.ssh01
		}
		d.checkPassword(machine, user, rec.Password)
	}
}

// fleetInventory is deploy/compose/inventory.yaml's layout with the users
// of web-01 and ssh-01, whose machines run testdata/scripts/log-step.sh.
func fleetInventory(webUsers, sshUsers []string) string {
	var b strings.Builder
	b.WriteString(`version: 1
records:
  - {uid: cfg, type: pamConfiguration, title: Fleet, gateway: gateway-1}
  - uid: web-01
    type: pamMachine
    worker: web-01
    scripts: [{file: scripts/log-step.sh, timeout: 1m}]
  - uid: ssh-01-admin
    type: login
    fields: [{type: login, value: admin}, {type: password, value: Admin-compose-demo-1}]
  - uid: ssh-01
    type: pamMachine
    connection: {protocol: ssh, host: ssh-01, port: 22, admin: ssh-01-admin, known_hosts: /hostkeys/known_hosts}
    scripts: [{file: scripts/log-step.sh, timeout: 1m}]
`)
	for _, group := range []struct {
		users    []string
		resource string
	}{{webUsers, "web-01"}, {sshUsers, "ssh-01"}} {
		for _, u := range group.users {
			fmt.Fprintf(&b, `  - uid: %[1]s
    type: pamUser
    fields: [{type: login, value: %[1]s}, {type: password, value: %[2]s}]
    rotation: {type: general, resource: %[3]s, configuration: cfg, complexity: {length: 24, upper: 2, lower: 2, digits: 2, special: 0}}
`, u, userPassword(u), group.resource)
		}
	}
	return b.String()
}

// firstDifference describes where got and want first differ.
func firstDifference(got, want []string) string {
	for i := range max(len(got), len(want)) {
		var g, w string
		if i < len(got) {
			g = got[i]
		}
		if i < len(want) {
			w = want[i]
		}
		if g != w {
			return fmt.Sprintf("line %d: %q, want %q", i+1, g, w)
		}
	}
	return "no difference"
}
