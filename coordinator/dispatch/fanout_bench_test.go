//go:build unix

package dispatch

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/postrotate/postrotate/coordinator/broker"
	"github.com/postrotate/postrotate/coordinator/broker/brokertest"
	"github.com/postrotate/postrotate/coordinator/inventory"
	"github.com/postrotate/postrotate/coordinator/plan"
	"github.com/postrotate/postrotate/coordinator/rotation"
	"github.com/postrotate/postrotate/executor"
	sshexec "github.com/postrotate/postrotate/executor/ssh"
	"github.com/postrotate/postrotate/executor/ssh/sshdtest"
	"github.com/postrotate/postrotate/messages/layout"
	"github.com/postrotate/postrotate/worker"
	"github.com/postrotate/postrotate/worker/workertest"
)

// fanOutTargets is how many SSH machines BenchmarkSSHFanOut reaches.
const fanOutTargets = 20

// fanOutScript is the script run on every machine: it reads the payload
// line, as a Keeper script does, and answers.
const fanOutScript = "#!/bin/sh\nIFS= read -r line\necho ok\n"

// BenchmarkSSHFanOut runs one script on 20 machines reached over SSH (20
// real sshd on loopback, key auth, host keys checked against known_hosts);
// one op is the script having run on all 20.
//
//   - Rotations: 20 rotations, one per machine's user, started at once
//     through the dispatcher, JetStream and the gateway's in-process
//     worker with its default executors; its SSH connections stay open
//     from one op to the next.
//   - Executor/{Sequential,Parallel}: the SSH executor alone (upload into
//     a private directory, run with the payload on stdin, remove), one
//     target after the other or all at once.
//   - OpenSSH/{Sequential,Parallel}: the same fan-out with a fresh `ssh`
//     client process per target, the script given as the remote command
//     and the payload on stdin — less work than the executor does (no
//     upload, no private directory, no removal), but a new connection and
//     login each time.
func BenchmarkSSHFanOut(b *testing.B) {
	if _, err := exec.LookPath("ssh"); err != nil {
		b.Skip("ssh client not found: install openssh-client")
	}
	fx := startFanOutServers(b)
	b.Run("Rotations", fx.benchRotations)
	for _, parallel := range []bool{false, true} {
		mode := map[bool]string{false: "Sequential", true: "Parallel"}[parallel]
		b.Run("Executor/"+mode, func(b *testing.B) { fx.benchExecutor(b, parallel) })
		b.Run("OpenSSH/"+mode, func(b *testing.B) { fx.benchOpenSSH(b, parallel) })
	}
}

// fanOutFixture is what every part of BenchmarkSSHFanOut reaches: the
// sshd servers, a directory holding each one's user key (key-<i>) and
// known_hosts, and the payload line fed to the script.
type fanOutFixture struct {
	dir, knownHosts string
	servers         []*sshdtest.Server
	payloadLine     []byte
}

// startFanOutServers starts fanOutTargets sshd and writes their user keys
// and one known_hosts naming them all.
func startFanOutServers(b *testing.B) *fanOutFixture {
	b.Helper()
	fx := &fanOutFixture{
		dir:         b.TempDir(),
		servers:     make([]*sshdtest.Server, fanOutTargets),
		payloadLine: []byte("eyJuZXdQYXNzd29yZCI6ICJiZW5jaCJ9\n"),
	}
	var known strings.Builder
	for i := range fx.servers {
		fx.servers[i] = sshdtest.Start(b)
		known.WriteString(fx.servers[i].KnownHosts())
		writeBenchFile(b, filepath.Join(fx.dir, fmt.Sprintf("key-%d", i)), fx.servers[i].UserKeyPEM, 0o600)
	}
	fx.knownHosts = filepath.Join(fx.dir, "known_hosts")
	writeBenchFile(b, fx.knownHosts, known.String(), 0o600)
	return fx
}

// benchRotations is BenchmarkSSHFanOut/Rotations: one rotation per
// machine's user, all started at once through the dispatcher.
func (fx *fanOutFixture) benchRotations(b *testing.B) {
	js, plans := fanOutRotations(b, fx.dir, fx.servers)
	d := New(js, Options{})
	ctx := context.Background()
	for b.Loop() {
		if err := runRotationsAtOnce(ctx, d, plans); err != nil {
			b.Fatal(err)
		}
	}
}

// runRotationsAtOnce runs the rotation of every plan at once and returns
// the first error, or an error for an outcome that is not a success with
// the script's answer.
func runRotationsAtOnce(ctx context.Context, d *Dispatcher, plans []*plan.Plan) error {
	var wg sync.WaitGroup
	errs := make(chan error, len(plans))
	for _, p := range plans {
		wg.Go(func() {
			out, err := engine(d, 0).Run(ctx, rotation.Rotation{ID: rotation.NewID(), Plan: p, NewPassword: "new-pw", OldPassword: "old-pw"})
			if err == nil && (!out.Success() || out.Results[0].Stdout != "ok\n") {
				err = fmt.Errorf("outcome %+v", out.Results)
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// benchExecutor is BenchmarkSSHFanOut/Executor/*: the SSH executor alone,
// one target after the other or all at once.
func (fx *fanOutFixture) benchExecutor(b *testing.B, parallel bool) {
	x := sshexec.New(sshexec.Options{})
	b.Cleanup(func() { _ = x.Close() })
	jobs := make([]executor.Job, len(fx.servers))
	for i, s := range fx.servers {
		target := s.Target()
		target.Password, target.PrivateKey = "", s.UserKeyPEM
		jobs[i] = executor.Job{
			RotationID: "bench", Step: 1, Attempt: 1,
			Script: executor.Script{Name: "step.sh", Content: []byte(fanOutScript)},
			Stdin:  fx.payloadLine, Target: target,
		}
	}
	ctx := context.Background()
	run := func(i int) error {
		res, err := x.Run(ctx, jobs[i])
		if err == nil && (!res.Success() || res.Stdout != "ok\n") {
			err = fmt.Errorf("result %+v", res)
		}
		return err
	}
	for b.Loop() {
		if err := fanOut(len(jobs), parallel, run); err != nil {
			b.Fatal(err)
		}
	}
}

// benchOpenSSH is BenchmarkSSHFanOut/OpenSSH/*: a fresh ssh client
// process per target, one after the other or all at once.
func (fx *fanOutFixture) benchOpenSSH(b *testing.B, parallel bool) {
	for b.Loop() {
		if err := fanOut(len(fx.servers), parallel, fx.runOpenSSH); err != nil {
			b.Fatal(err)
		}
	}
}

// runOpenSSH runs the script's answer on server i with the ssh client,
// the payload on stdin, and checks what it printed.
func (fx *fanOutFixture) runOpenSSH(i int) error {
	cmd := exec.Command("ssh", "-F", "/dev/null", "-T",
		"-i", filepath.Join(fx.dir, fmt.Sprintf("key-%d", i)), "-p", strconv.Itoa(fx.servers[i].Port()),
		"-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=yes",
		"-o", "UserKnownHostsFile="+fx.knownHosts, "-o", "ControlMaster=no", "-o", "LogLevel=ERROR",
		sshdtest.User+"@127.0.0.1", "IFS= read -r line; echo ok")
	cmd.Stdin = bytes.NewReader(fx.payloadLine)
	out, err := cmd.CombinedOutput()
	if err == nil && string(out) != "ok\n" {
		err = fmt.Errorf("output %q", out)
	}
	if err != nil {
		return fmt.Errorf("ssh to %s: %w: %s", fx.servers[i].Addr, err, out)
	}
	return nil
}

// fanOut calls run for 0..n-1, one after the other or all at once, and
// returns the first error.
func fanOut(n int, parallel bool, run func(int) error) error {
	if !parallel {
		for i := range n {
			if err := run(i); err != nil {
				return err
			}
		}
		return nil
	}
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { errs[i] = run(i) })
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// fanOutRotations writes an inventory with one machine per server (an ssh
// connection logged in by key, a user rotated with scripts only, the
// script attached to the machine), starts a broker, the layout and the
// gateway's worker, and returns the plans of the users.
func fanOutRotations(b *testing.B, dir string, servers []*sshdtest.Server) (jetstream.JetStream, []*plan.Plan) {
	b.Helper()
	var inv strings.Builder
	inv.WriteString("version: 1\nrecords:\n  - {uid: cfg, type: pamConfiguration, gateway: gw-1}\n")
	for i, s := range servers {
		fmt.Fprintf(&inv, `  - uid: admin-%[1]d
    type: pamUser
    fields: [{type: login, value: %[2]s}, {type: keyPair, value: {privateKey: %[3]s}}]
  - uid: m-%[1]d
    type: pamMachine
    connection: {protocol: ssh, host: 127.0.0.1, port: %[4]d, admin: admin-%[1]d, known_hosts: known_hosts}
    scripts: [{file: step.sh, timeout: 30s}]
  - uid: u-%[1]d
    type: pamUser
    fields: [{type: login, value: u%[1]d}, {type: password, value: old-pw}]
    rotation: {type: scripts_only, resource: m-%[1]d, configuration: cfg}
`, i, sshdtest.User, strconv.Quote(s.UserKeyPEM), s.Port())
	}
	writeBenchFile(b, filepath.Join(dir, "step.sh"), fanOutScript, 0o644)
	writeBenchFile(b, filepath.Join(dir, "inv.yaml"), inv.String(), 0o600)
	loaded, err := inventory.Load(filepath.Join(dir, "inv.yaml"))
	if err != nil {
		b.Fatal(err)
	}
	plans := make([]*plan.Plan, len(servers))
	for i := range servers {
		if plans[i], err = plan.New(loaded, fmt.Sprintf("u-%d", i)); err != nil {
			b.Fatal(err)
		}
	}
	js, _ := brokertest.JetStream(b, broker.Options{StoreDir: filepath.Join(dir, "js")})
	ctx := context.Background()
	var layout layout.Layout
	if err := layout.Setup(ctx, js); err != nil {
		b.Fatal(err)
	}
	if err := layout.EnsureHosts(ctx, js, "gw-1"); err != nil {
		b.Fatal(err)
	}
	w, err := worker.New(js, worker.Options{Host: "gw-1", FetchWait: time.Second})
	if err != nil {
		b.Fatal(err)
	}
	workertest.Start(b, w, 0)
	return js, plans
}

func writeBenchFile(b *testing.B, name, content string, perm os.FileMode) {
	b.Helper()
	if err := os.WriteFile(name, []byte(content), perm); err != nil {
		b.Fatal(err)
	}
}
