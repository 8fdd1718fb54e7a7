//go:build unix

package winrm

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/postrotate/postrotate/executor"
	"github.com/postrotate/postrotate/executor/executortest"
)

// These tests run the executor against the fake WS-Management server of
// fakeserver_test.go, with Options.Shell = ShellPOSIX: the remote program
// is /bin/sh -s instead of PowerShell, with the same stdin-only delivery.
// What they exercise for real: login (NTLMv2 and Basic, over HTTP and
// HTTPS), Create, Command, Send in chunks within the envelope size with End
// on the last, Receive until Done with the exit code, Signal terminate and
// Delete at a timeout or cancellation, the removal of the run directory,
// output caps and masking (the executortest conformance suite). What they
// cannot: real PowerShell and cmd.exe (the PowerShell program is checked as
// text in program_test.go), NTLM against a Windows listener, message
// encryption.

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// bundle is an executor, the fake server it talks to, and its target.
type bundle struct {
	w      *WinRM
	fake   *fakeServer
	target *executor.Target
}

// setup starts a fake server and returns an executor in POSIX mode for it.
func setup(t *testing.T, fo fakeOptions, opts Options) bundle {
	t.Helper()
	fake := newFakeServer(t, fo)
	opts.Shell = ShellPOSIX
	if opts.Auth == "" {
		opts.Auth = fo.Auth
	}
	if opts.KillGrace == 0 {
		opts.KillGrace = 2 * time.Second
	}
	target := fake.target()
	if fo.TLS {
		target.InsecureIgnoreHostKey = true
	}
	return bundle{w: New(opts), fake: fake, target: target}
}

func (b bundle) run(t *testing.T, job executor.Job) executor.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if job.Target == nil {
		job.Target = b.target
	}
	res, err := b.w.Run(ctx, job)
	if err != nil {
		t.Fatalf("Run: %v (result %+v)", err, res)
	}
	return res
}

// assertClean checks that the run left no directory in the fake's TMPDIR
// and no shell open.
func (b bundle) assertClean(t *testing.T) {
	t.Helper()
	entries, err := os.ReadDir(b.fake.temp)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		t.Errorf("left behind on the target: %s", e.Name())
	}
	if n := b.fake.OpenShells(); n != 0 {
		t.Errorf("%d shells left open", n)
	}
}

func shJob(script string) executor.Job {
	return executor.Job{
		RotationID: "rot-winrm", Step: 1, Attempt: 1,
		Script: executor.Script{Name: "script.sh", Content: []byte(script)},
	}
}

// targeted gives the suite's jobs, which have no target, the fake's.
type targeted struct {
	w      *WinRM
	target *executor.Target
}

func (x targeted) Run(ctx context.Context, job executor.Job) (executor.Result, error) {
	if job.Target == nil {
		job.Target = x.target
	}
	return x.w.Run(ctx, job)
}

func TestConformance(t *testing.T) {
	executortest.Run(t, executortest.Harness{
		New: func(t *testing.T) executor.Executor {
			b := setup(t, fakeOptions{}, Options{})
			t.Cleanup(func() { b.assertClean(t) })
			return targeted{w: b.w, target: b.target}
		},
		KillGrace:   2 * time.Second,
		StartWithin: 3 * time.Second,
		// No TermBeforeKill: WinRM ends a command with Signal terminate
		// (TerminateProcess on Windows, no grace), which the fake server
		// mirrors with SIGKILL, then deletes the shell. The suite still
		// checks that a tree ignoring SIGTERM is gone: the fake runs the
		// scripts on this machine, where the suite sees their processes.
	})
}

func TestLargeStdinArrivesIntact(t *testing.T) {
	t.Parallel()
	b := setup(t, fakeOptions{}, Options{})
	stdin := make([]byte, 400<<10)
	_, _ = rand.Read(stdin)
	sum := sha256.Sum256(stdin)
	job := shJob("sha256sum | cut -d ' ' -f 1\nwc -c\n")
	job.Stdin = stdin
	res := b.run(t, job)
	if !res.Success() {
		t.Fatalf("exit %d, error %q, stderr %q", res.ExitCode, res.Error, res.Stderr)
	}
	// wc -c reads nothing: sha256sum read it all.
	if want := hex.EncodeToString(sum[:]) + "\n0\n"; res.Stdout != want {
		t.Errorf("stdout %q, want the sha256 of the 400 KiB sent, %q", res.Stdout, want)
	}
	var sends, ends, total int
	lastEnd := false
	for _, r := range b.fake.Requests() {
		if r.Size > r.MaxEnvelope {
			t.Errorf("%s request of %d bytes exceeds its MaxEnvelopeSize %d", r.Action, r.Size, r.MaxEnvelope)
		}
		if r.Action != actSend {
			continue
		}
		sends++
		total += r.StdinBytes
		lastEnd = r.End
		if r.End {
			ends++
		}
	}
	if ends != 1 || !lastEnd {
		t.Errorf("%d Send requests marked End, the last one %v: want only the last", ends, lastEnd)
	}
	if sends < 4 {
		t.Errorf("%d Send requests for 400 KiB of payload: want it chunked", sends)
	}
	if total < len(stdin)*4/3 {
		t.Errorf("%d stdin bytes sent, want at least the base64 of the payload", total)
	}
	for _, r := range b.fake.Requests() {
		if r.Action == actCommand && r.Options["WINRS_CONSOLEMODE_STDIN"] != "FALSE" {
			t.Errorf("Command with WINRS_CONSOLEMODE_STDIN %q, want FALSE: stdin must be a pipe", r.Options["WINRS_CONSOLEMODE_STDIN"])
		}
	}
	b.assertClean(t)
}

func TestNonZeroExitIsAResult(t *testing.T) {
	t.Parallel()
	for _, auth := range []Auth{AuthNTLM, AuthBasic} {
		t.Run(string(auth), func(t *testing.T) {
			t.Parallel()
			b := setup(t, fakeOptions{Auth: auth}, Options{})
			res := b.run(t, shJob("echo out\necho err >&2\nexit 42\n"))
			if res.ExitCode != 42 || res.Success() || res.Error != "" || res.TimedOut {
				t.Errorf("exit %d, success %v, error %q, timed out %v; want exit 42 as a plain result", res.ExitCode, res.Success(), res.Error, res.TimedOut)
			}
			if res.Stdout != "out\n" || res.Stderr != "err\n" {
				t.Errorf("stdout %q, stderr %q", res.Stdout, res.Stderr)
			}
			if res.System != "Windows" || res.Command != "/bin/sh ./script.sh" {
				t.Errorf("system %q, command %q", res.System, res.Command)
			}
			b.assertClean(t)
		})
	}
}

func TestTimeoutSignalsAndDeletes(t *testing.T) {
	t.Parallel()
	b := setup(t, fakeOptions{}, Options{})
	job := shJob("echo started\nsleep 300\necho after\n")
	job.Script.Timeout = 2 * time.Second
	res := b.run(t, job)
	if !res.TimedOut || res.ExitCode != -1 || !strings.Contains(res.Error, "timed out after 2s") {
		t.Errorf("timed out %v, exit %d, error %q", res.TimedOut, res.ExitCode, res.Error)
	}
	if res.Stdout != "started\n" {
		t.Errorf("stdout %q, want what was printed before the kill", res.Stdout)
	}
	var command string
	signalled, deleted := false, 0
	for _, r := range b.fake.Requests() {
		switch r.Action {
		case actCommand:
			if command == "" {
				command = r.ShellID
			}
		case actSignal:
			signalled = r.SignalCode == signalTerm
		case actDelete:
			deleted++
		}
	}
	if !signalled {
		t.Error("no Signal terminate sent at the timeout")
	}
	if deleted != 2 {
		t.Errorf("%d shells deleted, want 2 (the script's, the cleanup's)", deleted)
	}
	b.assertClean(t)
}

func TestCancelSignals(t *testing.T) {
	t.Parallel()
	b := setup(t, fakeOptions{Auth: AuthBasic}, Options{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	job := shJob("echo started\nexec sleep 300\n")
	job.Target = b.target
	time.AfterFunc(2*time.Second, cancel)
	res, err := b.w.Run(ctx, job)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Run error %v, want context.Canceled", err)
	}
	if res.ExitCode != -1 || !strings.HasPrefix(res.Error, "canceled") || res.Stdout != "started\n" {
		t.Errorf("exit %d, error %q, stdout %q", res.ExitCode, res.Error, res.Stdout)
	}
	b.assertClean(t)
}

// secretForms returns a secret and the forms a command line could leak.
func secretForms(secret string) []string {
	return []string{secret, base64.StdEncoding.EncodeToString([]byte(secret))}
}

func TestNoSecretOnAnyCommandLine(t *testing.T) {
	t.Parallel()
	b := setup(t, fakeOptions{}, Options{})
	const secret = "N3w-S3cret-P@ss"
	payload := base64.StdEncoding.EncodeToString([]byte(`{"newPassword":"` + secret + `"}`))
	job := shJob("IFS= read -r line\nprintf '%s\\n' \"$line\" | base64 -d\necho\n")
	job.Stdin = []byte(payload + "\n")
	job.Secrets = []string{secret}
	res := b.run(t, job)
	if !res.Success() || res.Stdout != `{"newPassword":"********"}`+"\n" {
		t.Fatalf("exit %d, error %q, stdout %q, stderr %q", res.ExitCode, res.Error, res.Stdout, res.Stderr)
	}
	forms := append(secretForms(secret), payload, b.target.Password)
	for _, r := range b.fake.Requests() {
		if r.Action == actSend {
			continue // stdin: the payload travels here, base64 encoded
		}
		for _, form := range forms {
			if strings.Contains(r.Body, form) {
				t.Errorf("a %s request holds a secret", r.Action)
			}
		}
	}
	for _, form := range forms {
		if strings.Contains(res.Command, form) {
			t.Errorf("Result.Command %q holds a secret", res.Command)
		}
	}
}

func TestLoginRefused(t *testing.T) {
	t.Parallel()
	for _, auth := range []Auth{AuthNTLM, AuthBasic} {
		t.Run(string(auth), func(t *testing.T) {
			t.Parallel()
			b := setup(t, fakeOptions{Auth: auth}, Options{})
			job := shJob("echo never\n")
			job.Target = b.target
			job.Target.Password = "wrong-Passw0rd"
			res, err := b.w.Run(context.Background(), job)
			if !errors.Is(err, ErrUnauthorized) {
				t.Fatalf("Run error %v, want ErrUnauthorized", err)
			}
			if strings.Contains(err.Error(), "wrong-Passw0rd") || strings.Contains(res.Error, "wrong-Passw0rd") {
				t.Errorf("the password leaks in %q / %q", err, res.Error)
			}
			if b.fake.Refused() == 0 {
				t.Error("the fake refused no request")
			}
			for _, r := range b.fake.Requests() {
				t.Errorf("request %s handled without a login", r.Action)
			}
		})
	}
}

func TestNTLMFallsBackToBasic(t *testing.T) {
	t.Parallel()
	b := setup(t, fakeOptions{Auth: AuthBasic}, Options{Auth: AuthNTLM})
	res := b.run(t, shJob("echo ok\n"))
	if !res.Success() || res.Stdout != "ok\n" {
		t.Errorf("exit %d, error %q, stdout %q", res.ExitCode, res.Error, res.Stdout)
	}
}

func TestHTTPS(t *testing.T) {
	t.Parallel()
	b := setup(t, fakeOptions{TLS: true}, Options{})
	t.Run("InsecureIgnoreHostKey", func(t *testing.T) {
		res := b.run(t, shJob("echo tls\n"))
		if !res.Success() || res.Stdout != "tls\n" {
			t.Errorf("exit %d, error %q, stdout %q", res.ExitCode, res.Error, res.Stdout)
		}
	})
	t.Run("CACert", func(t *testing.T) {
		target := *b.target
		target.InsecureIgnoreHostKey = false
		target.CACert = string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: b.fake.srv.Certificate().Raw}))
		job := shJob("echo tls\n")
		job.Target = &target
		res := b.run(t, job)
		if !res.Success() || res.Stdout != "tls\n" {
			t.Errorf("exit %d, error %q, stdout %q", res.ExitCode, res.Error, res.Stdout)
		}
	})
	t.Run("UntrustedCertificate", func(t *testing.T) {
		target := *b.target
		target.InsecureIgnoreHostKey = false
		job := shJob("echo tls\n")
		job.Target = &target
		if _, err := b.w.Run(context.Background(), job); err == nil || !strings.Contains(err.Error(), "certificate") {
			t.Errorf("Run error %v, want a certificate error", err)
		}
	})
}

func TestRunDirectoryFailure(t *testing.T) {
	t.Parallel()
	b := setup(t, fakeOptions{}, Options{TempDir: "/nonexistent/postrotate"})
	job := shJob("echo never\n")
	job.Target = b.target
	res, err := b.w.Run(context.Background(), job)
	if err == nil || !strings.Contains(err.Error(), "prepare run directory: create run directory") {
		t.Fatalf("Run error %v, want the run directory failure", err)
	}
	if !strings.Contains(err.Error(), "mkdir") {
		t.Errorf("Run error %v does not hold the remote program's stderr", err)
	}
	if res.Stdout != "" || strings.Contains(res.Stderr, "failed create run directory") {
		t.Errorf("stdout %q, stderr %q: status lines must not show", res.Stdout, res.Stderr)
	}
}

func TestNoTarget(t *testing.T) {
	t.Parallel()
	_, err := New(Options{}).Run(context.Background(), shJob("echo\n"))
	if !errors.Is(err, ErrNoTarget) {
		t.Errorf("Run error %v, want ErrNoTarget", err)
	}
}

func TestUnreachable(t *testing.T) {
	t.Parallel()
	b := setup(t, fakeOptions{}, Options{DialTimeout: time.Second})
	target := *b.target
	b.fake.srv.Close()
	job := shJob("echo\n")
	job.Target = &target
	_, err := b.w.Run(context.Background(), job)
	if err == nil || !strings.Contains(err.Error(), "open shell") || !strings.Contains(err.Error(), target.Host) {
		t.Errorf("Run error %v, want one naming the address", err)
	}
}

func TestBadOptions(t *testing.T) {
	t.Parallel()
	for _, opts := range []Options{
		{Auth: "kerberos"},
		{Shell: "bash"},
		{OperationTimeout: time.Minute, RequestTimeout: time.Second},
		{InheritEnv: []string{"PATH;x"}},
	} {
		job := shJob("echo\n")
		job.Target = &executor.Target{Host: "127.0.0.1"}
		if _, err := New(opts).Run(context.Background(), job); err == nil || !strings.Contains(err.Error(), "option") {
			t.Errorf("options %+v: Run error %v, want an option error", opts, err)
		}
	}
}
