package cli

import (
	"context"
	"encoding/json"
	"errors"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/postrotate/postrotate/coordinator/app"
	"github.com/postrotate/postrotate/coordinator/broker"
	"github.com/postrotate/postrotate/coordinator/broker/brokertest"
	"github.com/postrotate/postrotate/coordinator/identity"
	"github.com/postrotate/postrotate/coordinator/vault"
	"github.com/postrotate/postrotate/messages/envelope"
)

const cliToken = "cli-test-token-41b9"

// api is a running serve's HTTP API, with an API token, and the file
// that holds it.
type api struct {
	url, tokenFile string
}

func startAPI(t *testing.T) api {
	t.Helper()
	js, _ := brokertest.JetStream(t, broker.Options{StoreDir: t.TempDir()})
	inv := writeInventory(t, failingInventory, map[string]string{"fail.sh": "exit 1\n", "ok.sh": "exit 0\n"})
	loaded, err := loadInventory(inv)
	if err != nil {
		t.Fatal(err)
	}
	key := vault.NewKey()
	s, err := app.New(js, app.Options{Inventory: loaded, Key: &key, APIToken: cliToken, NATSURL: "nats://gw.example:4222", NoSchedules: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Stop(context.Background()) })
	hs := httptest.NewServer(s.Handler())
	t.Cleanup(hs.Close)
	a := api{url: hs.URL, tokenFile: filepath.Join(t.TempDir(), "token")}
	if err := os.WriteFile(a.tokenFile, []byte(cliToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return a
}

func TestWorkerAdd(t *testing.T) {
	t.Parallel()
	a := startAPI(t)
	first := addWorkerToFile(t, a)
	pub := addWorkerAgain(t, a, first)
	code, stdout, _ := run(t, "worker", "add", "u-gw", "--server", a.url, "--api-token-file", a.tokenFile)
	if code != ExitOK {
		t.Fatalf("to stdout: exit %d", code)
	}
	if _, err := envelope.DecodeCredentials([]byte(stdout)); err != nil {
		t.Fatalf("stdout is not a credentials file: %v\n%s", err, stdout)
	}

	code, stdout, _ = run(t, "worker", "list", "--server", a.url, "--api-token-file", a.tokenFile, "--json")
	var all []identity.Worker
	if err := json.Unmarshal([]byte(stdout), &all); code != ExitOK || err != nil || len(all) != 2 || all[0].Host != "gw" || all[0].UserKey != pub {
		t.Fatalf("list: exit %d, %v\n%s", code, err, stdout)
	}
	if code, _, stderr := run(t, "worker", "remove", "gw", "--server", a.url, "--api-token-file", a.tokenFile); code != ExitOK {
		t.Fatalf("remove: exit %d\n%s", code, stderr)
	}
	if code, _, stderr := run(t, "worker", "remove", "gw", "--server", a.url, "--api-token-file", a.tokenFile); code != ExitUsage || !strings.Contains(stderr, "not enrolled") {
		t.Fatalf("second remove: exit %d\n%s", code, stderr)
	}
}

// addWorkerToFile enrolls the worker of gw with its credentials written
// to a file, and returns them.
func addWorkerToFile(t *testing.T, a api) envelope.Credentials {
	t.Helper()
	out := filepath.Join(t.TempDir(), "gw.creds")
	code, stdout, stderr := run(t, "worker", "add", "gw", "--server", a.url, "--api-token-file", a.tokenFile, "--out", out)
	if code != ExitOK || stdout != "" || !strings.Contains(stderr, "postrotate-worker --creds "+out) {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	info, err := os.Stat(out)
	if err != nil {
		t.Fatal(err)
	}
	if runtime.GOOS != "windows" && info.Mode().Perm() != 0o600 {
		t.Fatalf("credentials file mode %04o, want 0600", info.Mode().Perm())
	}
	c, err := envelope.ReadCredentials(out)
	if err != nil {
		t.Fatal(err)
	}
	if c.Host != "gw" || c.NATS != "nats://gw.example:4222" || c.InboxPrefix != "_INBOX_gw" {
		t.Fatalf("credentials %+v", c)
	}
	// The seeds are nowhere else.
	if strings.Contains(stderr, c.UserSeed) || strings.Contains(stderr, c.CurveSeed) {
		t.Fatal("a seed reached stderr")
	}
	return c
}

// addWorkerAgain enrolls the worker of gw again, with another NATS URL and
// the nats-server configuration: it replaces the first identity. It
// returns the new NATS user's public key.
func addWorkerAgain(t *testing.T, a api, first envelope.Credentials) string {
	t.Helper()
	out2 := filepath.Join(t.TempDir(), "gw2.creds")
	code, stdout, stderr := run(t, "worker", "add", "gw", "--server", a.url, "--api-token-file", a.tokenFile,
		"--out", out2, "--nats", "nats://10.0.0.1:4222", "--nats-config")
	if code != ExitOK || !strings.Contains(stderr, "replaced") {
		t.Fatalf("exit %d\n%s", code, stderr)
	}
	c2, err := envelope.ReadCredentials(out2)
	if err != nil {
		t.Fatal(err)
	}
	user, _ := c2.User()
	pub, _ := user.PublicKey()
	if c2.NATS != "nats://10.0.0.1:4222" || c2.UserSeed == first.UserSeed || !strings.Contains(stdout, "authorization {") ||
		!strings.Contains(stdout, pub) || !strings.Contains(stdout, `"$JS.API.CONSUMER.MSG.NEXT.POSTROTATE_TASKS.host_gw"`) {
		t.Fatalf("credentials %+v\nstdout:\n%s", c2, stdout)
	}
	return pub
}

func TestWorkerAddUsage(t *testing.T) {
	t.Parallel()
	a := startAPI(t)
	for name, args := range map[string][]string{
		"nats-config without out": {"worker", "add", "gw", "--nats-config"},
		"no host":                 {"worker", "add"},
		"empty host":              {"worker", "add", ""},
	} {
		args = append(args, "--server", a.url, "--api-token-file", a.tokenFile)
		if code, _, stderr := run(t, args...); code != ExitUsage {
			t.Errorf("%s: exit %d, want 2\n%s", name, code, stderr)
		}
	}
}

// The clients send the API token; without it, or with another, the serve
// answers 401 and the client says how to give it.
func TestClientsSendTheAPIToken(t *testing.T) {
	t.Parallel()
	a := startAPI(t)
	wrong := filepath.Join(t.TempDir(), "wrong")
	if err := os.WriteFile(wrong, []byte("not-the-token"), 0o600); err != nil {
		t.Fatal(err)
	}
	loose := filepath.Join(t.TempDir(), "loose")
	if err := os.WriteFile(loose, []byte(cliToken), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"records", "list"},
		{"records", "get", "u"},
		{"worker", "list"},
		{"worker", "add", "gw"},
		{"rotate", "--user", "u"},
	} {
		checkTokenRefused(t, append(args, "--server", a.url), wrong, loose)
	}
	if code, stdout, stderr := run(t, "records", "list", "--server", a.url, "--api-token-file", a.tokenFile); code != ExitOK || !strings.Contains(stdout, "UID") {
		t.Fatalf("records list with the token: exit %d\n%s%s", code, stdout, stderr)
	}
	code, stdout, stderr := run(t, "rotate", "--user", "u", "--server", a.url, "--api-token-file", a.tokenFile)
	if code != ExitOK || !strings.Contains(stdout, "started") {
		t.Fatalf("rotate with the token: exit %d\n%s%s", code, stdout, stderr)
	}
}

// checkTokenRefused runs the client command args without a token, with
// the wrong token in the file wrong, and with the token in a file others
// may read (loose): each is refused, saying why.
func checkTokenRefused(t *testing.T, args []string, wrong, loose string) {
	t.Helper()
	if code, _, stderr := run(t, args...); code != ExitFailed || !strings.Contains(stderr, "401") || !strings.Contains(stderr, "--api-token-file") {
		t.Errorf("%v without a token: exit %d\n%s", args, code, stderr)
	}
	if code, _, stderr := run(t, append(args, "--api-token-file", wrong)...); code != ExitFailed || !strings.Contains(stderr, "401") {
		t.Errorf("%v with a wrong token: exit %d\n%s", args, code, stderr)
	}
	if runtime.GOOS != "windows" {
		if code, _, stderr := run(t, append(args, "--api-token-file", loose)...); code != ExitUsage || !strings.Contains(stderr, "chmod 600") {
			t.Errorf("%v with a 0644 token file: exit %d\n%s", args, code, stderr)
		}
	}
}

// $POSTROTATE_API_TOKEN is the token when no file is given. (Not
// parallel: it sets the environment.)
func TestAPITokenFromEnvironment(t *testing.T) {
	a := startAPI(t)
	t.Setenv(apiTokenEnv, cliToken)
	if code, _, stderr := run(t, "worker", "list", "--server", a.url); code != ExitOK {
		t.Fatalf("exit %d\n%s", code, stderr)
	}
	t.Setenv(apiTokenEnv, "secret value")
	if code, _, stderr := run(t, "worker", "list", "--server", a.url); code != ExitUsage || strings.Contains(stderr, "secret value") {
		t.Fatalf("bad token: exit %d\n%s", code, stderr)
	}
}

func TestServeTokenFile(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "sub", "token")
	tok, created, err := serveToken(path)
	if err != nil || !created || len(tok) < 40 {
		t.Fatalf("first start: %q %v %v", tok, created, err)
	}
	again, created, err := serveToken(path)
	if err != nil || created || again != tok {
		t.Fatalf("second start: %v %v", created, err)
	}
	if runtime.GOOS != "windows" {
		if err := os.Chmod(path, 0o640); err != nil {
			t.Fatal(err)
		}
		if _, _, err := serveToken(path); err == nil || !strings.Contains(err.Error(), "too open") {
			t.Fatalf("0640 token file: %v", err)
		}
	}
	empty := filepath.Join(t.TempDir(), "empty")
	if err := os.WriteFile(empty, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := serveToken(empty); err == nil {
		t.Fatal("an empty token file was accepted")
	}
	if _, err := readToken(filepath.Join(t.TempDir(), "none")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing client token file: %v", err)
	}
}
