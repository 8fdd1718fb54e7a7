package oneshot

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"go.uber.org/goleak"

	"github.com/postrotate/postrotate/coordinator/inventory"
	"github.com/postrotate/postrotate/coordinator/rotation"
	"github.com/postrotate/postrotate/executor/proctest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const marker = "Marker-Passw0rd-7f3e9c"

// fixture writes an inventory and its scripts into a temp dir and loads it.
type fixture struct {
	scripts map[string]string // file name → content
	yaml    string
}

func (f fixture) load(t *testing.T) *inventory.Inventory {
	t.Helper()
	dir := t.TempDir()
	for name, content := range f.scripts {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	path := filepath.Join(dir, "inventory.yaml")
	if err := os.WriteFile(path, []byte(f.yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	inv, err := inventory.Load(path)
	if err != nil {
		t.Fatalf("load inventory: %v", err)
	}
	return inv
}

// inventoryYAML returns an inventory whose user, machine and configuration
// carry the given script attachments (YAML flow mappings).
func inventoryYAML(user, machine, config []string) string {
	list := func(items []string) string {
		if len(items) == 0 {
			return "[]"
		}
		return "\n" + "      - " + strings.Join(items, "\n      - ")
	}
	return fmt.Sprintf(`version: 1
records:
  - uid: cfg
    type: pamConfiguration
    title: Config
    gateway: gateway-1
    scripts: %s
  - uid: web-01
    type: pamMachine
    title: web-01
    worker: web-01
    fields:
      - {type: pamHostname, value: {hostName: web-01.internal, port: "22"}}
    scripts: %s
  - uid: token
    type: login
    title: Record with Access Token
    fields:
      - {type: password, value: tok-3c1d}
  - uid: svc
    type: pamUser
    title: svc
    fields:
      - {type: login, value: svc@example.com}
      - {type: password, value: %s}
    rotation:
      type: scripts_only
      resource: web-01
      configuration: cfg
    scripts: %s
`, list(config), list(machine), marker, list(user))
}

func rotate(t *testing.T, inv *inventory.Inventory) rotation.Outcome {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	out, err := Rotate(ctx, inv, "svc", Options{})
	if err != nil {
		t.Fatalf("Rotate: %v", err)
	}
	return out
}

// The three ways Keeper scripts read stdin all decode the same payload,
// through the real executor and the real JetStream path.
func TestKeeperStdinReaders(t *testing.T) {
	t.Parallel()
	inv := fixture{
		scripts: map[string]string{
			"reader.py": "import sys, base64\nfor line in sys.stdin:\n    sys.stdout.write(base64.b64decode(line).decode())\n    break\n",
			"read.sh":   "#!/bin/bash\nIFS= read -r line\nprintf '%s' \"$line\" | base64 -d\n",
			"cat.sh":    "cat | base64 --decode\n",
		},
		yaml: inventoryYAML([]string{
			"{file: reader.py, command: python3, records: [token]}",
			"{file: read.sh, records: [token]}",
			"{file: cat.sh, records: [token]}",
		}, nil, nil),
	}.load(t)
	out := rotate(t, inv)
	if out.Failed != 0 || len(out.Results) != 3 {
		t.Fatalf("outcome: %+v", out)
	}
	first := out.Results[0].Stdout
	for _, r := range out.Results {
		if r.Stdout != first {
			t.Errorf("%s decoded %q, python decoded %q", r.Name, r.Stdout, first)
		}
	}
	var params map[string]string
	if err := json.Unmarshal([]byte(first), &params); err != nil {
		t.Fatalf("decoded payload is not the JSON object: %v\n%s", err, first)
	}
	if params["userRecordUid"] != "svc" || params["resourceRecordUid"] != "web-01" || params["providerRecordUid"] != "cfg" ||
		params["user"] != "svc@example.com" || params["oldPassword"] != "********" || params["newPassword"] != "********" {
		t.Fatalf("params = %v", params)
	}
	// records carries every record's secrets: a script echoing it must not leak them.
	if params["records"] != "********" {
		t.Fatalf("records not masked: %q", params["records"])
	}
}

// The records array holds the configuration, the resource, the script's
// additional records and the user, in that order, as Keeper's dictionaries.
func TestRecordsArray(t *testing.T) {
	t.Parallel()
	inv := fixture{
		scripts: map[string]string{
			"titles.py": "import sys, base64, json\nfor line in sys.stdin:\n    params = json.loads(base64.b64decode(line).decode())\n" +
				"    records = json.loads(base64.b64decode(params['records']).decode())\n    break\n" +
				"print(','.join(r['title'] for r in records))\nprint(json.dumps(records[1]['pamHostname'], sort_keys=True))\n",
		},
		yaml: inventoryYAML([]string{"{file: titles.py, command: /usr/bin/python3, records: [token]}"}, nil, nil),
	}.load(t)
	out := rotate(t, inv)
	if out.Failed != 0 {
		t.Fatalf("outcome: %+v", out.Results)
	}
	want := "Config,web-01,Record with Access Token,svc\n" + `{"hostName": "web-01.internal", "port": "22"}` + "\n"
	if got := out.Results[0].Stdout; got != want {
		t.Fatalf("stdout = %q, want %q", got, want)
	}
}

// Scripts run user → resource → configuration, in attachment order within a
// record, and a failing script does not stop the ones after it.
func TestOrderAndFailureContinues(t *testing.T) {
	t.Parallel()
	logFile := filepath.Join(t.TempDir(), "order.log")
	script := func(name string, exit int) string {
		return fmt.Sprintf("echo %s >> %s\necho host=$POSTROTATE_STEP\nexit %d\n", name, logFile, exit)
	}
	f := fixture{scripts: map[string]string{}}
	att := func(name string, exit int) string {
		f.scripts[name+".sh"] = script(name, exit)
		return fmt.Sprintf("{file: %s.sh}", name)
	}
	f.yaml = inventoryYAML(
		[]string{att("user1", 0), att("user2", 3)},
		[]string{att("machine1", 0), att("machine2", 0)},
		[]string{att("config1", 0), att("config2", 0)},
	)
	out := rotate(t, f.load(t))
	log, err := os.ReadFile(logFile)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := strings.Fields(string(log)), []string{"user1", "user2", "machine1", "machine2", "config1", "config2"}; strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("order = %v, want %v", got, want)
	}
	if out.Succeeded != 5 || out.Failed != 1 || len(out.Results) != 6 {
		t.Fatalf("outcome = %+v", out)
	}
	wantHosts := []string{"gateway-1", "gateway-1", "web-01", "web-01", "gateway-1", "gateway-1"}
	for i, r := range out.Results {
		if r.Step != i+1 || r.Host != wantHosts[i] {
			t.Errorf("result %d: step %d host %s, want step %d host %s", i, r.Step, r.Host, i+1, wantHosts[i])
		}
	}
	if r := out.Results[1]; r.Success || r.ExitCode != 3 || r.UID != "svc" {
		t.Fatalf("failing script result = %+v", r)
	}
}

// With stop_on_failure, the first failed script ends the rotation and the
// later steps are reported, not run.
func TestStopOnFailure(t *testing.T) {
	t.Parallel()
	logFile := filepath.Join(t.TempDir(), "ran.log")
	f := fixture{
		scripts: map[string]string{
			"ok.sh":    "echo ok >> " + logFile + "\n",
			"fail.sh":  "echo fail >> " + logFile + "\nexit 1\n",
			"never.sh": "echo never >> " + logFile + "\n",
		},
		yaml: strings.Replace(inventoryYAML([]string{"{file: ok.sh}", "{file: fail.sh}"}, []string{"{file: never.sh}"}, nil),
			"type: scripts_only", "type: scripts_only\n      stop_on_failure: true", 1),
	}
	out := rotate(t, f.load(t))
	ran, _ := os.ReadFile(logFile)
	if got := strings.Fields(string(ran)); strings.Join(got, " ") != "ok fail" {
		t.Fatalf("ran %v", got)
	}
	if len(out.Results) != 3 || out.Succeeded != 1 || out.Failed != 2 || !strings.Contains(out.Results[2].Error, "stop_on_failure") {
		t.Fatalf("outcome = %+v", out.Results)
	}
}

// A script that hangs past its timeout is killed with its children, and
// what it printed first is kept; a script printing 50 MB is capped; the
// rotation completes.
func TestTimeoutAndHugeOutput(t *testing.T) {
	t.Parallel()
	f := fixture{
		scripts: map[string]string{
			"hang.sh":  "sleep 300 &\necho child=$!\necho before\nsleep 300\n",
			"flood.sh": "head -c 52428800 /dev/zero | tr '\\0' 'x'\necho\necho the-end\n",
			"after.sh": "echo still running\n",
		},
		yaml: inventoryYAML([]string{"{file: hang.sh, timeout: 1s}", "{file: flood.sh}", "{file: after.sh}"}, nil, nil),
	}
	out := rotate(t, f.load(t))
	if len(out.Results) != 3 {
		t.Fatalf("outcome = %+v", out)
	}
	hang := out.Results[0]
	if hang.Success || !strings.Contains(hang.Error, "timed out") || !strings.Contains(hang.Stdout, "before") {
		t.Fatalf("hung script result = %+v", hang)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(strings.SplitN(strings.TrimPrefix(hang.Stdout, "child="), "\n", 2)[0]))
	if err != nil {
		t.Fatalf("child pid in %q: %v", hang.Stdout, err)
	}
	proctest.WaitGone(t, []int{pid}, 5*time.Second)
	flood := out.Results[1]
	if !flood.Success || !flood.StdoutTruncated || len(flood.Stdout) > 1<<20+200 || !strings.HasSuffix(flood.Stdout, "the-end\n") ||
		!strings.HasPrefix(flood.Stdout, "xxxx") {
		t.Fatalf("flood result: success %v truncated %v len %d", flood.Success, flood.StdoutTruncated, len(flood.Stdout))
	}
	if !out.Results[2].Success {
		t.Fatalf("script after the flood = %+v", out.Results[2])
	}
}

// The marker password never reaches a result: not as itself, not base64.
func TestSecretsMaskedInResults(t *testing.T) {
	t.Parallel()
	f := fixture{
		scripts: map[string]string{
			"leak.sh": "IFS= read -r line\necho \"$line\"\njson=$(printf '%s' \"$line\" | base64 -d)\necho \"$json\"\necho \"$json\" >&2\n" +
				"printf '%s' \"" + marker + "\" | base64\n",
		},
		yaml: inventoryYAML([]string{"{file: leak.sh, records: [token]}"}, nil, nil),
	}
	var logs bytes.Buffer
	log := zerolog.New(zerolog.SyncWriter(&logs)).Level(zerolog.TraceLevel)
	out, err := Rotate(t.Context(), f.load(t), "svc", Options{Logger: &log})
	if err != nil {
		t.Fatal(err)
	}
	data, _ := json.Marshal(out.Results)
	for _, leak := range []string{marker, base64.StdEncoding.EncodeToString([]byte(marker)), "tok-3c1d"} {
		if strings.Contains(string(data), leak) {
			t.Fatalf("result leaks %q:\n%s", leak, data)
		}
		if strings.Contains(logs.String(), leak) {
			t.Fatalf("trace-level logs leak %q:\n%s", leak, logs.String())
		}
	}
	if !strings.Contains(logs.String(), "script finished") {
		t.Fatalf("no worker logs captured:\n%s", logs.String())
	}
	// Signed and sealed end to end: the in-process workers verify tasks.
	if !strings.Contains(logs.String(), `"verified":true`) || strings.Contains(logs.String(), "tasks are not verified") {
		t.Fatalf("one-shot workers do not verify tasks:\n%s", logs.String())
	}
	if !strings.Contains(out.Results[0].Stdout, "********") {
		t.Fatalf("nothing masked: %q", out.Results[0].Stdout)
	}
}

// Rotations no built-in rotator can perform are refused before anything
// runs: iam_user, and general on a Windows machine reached over winrm.
func TestRefusesGeneralRotationWithoutRotator(t *testing.T) {
	t.Parallel()
	for _, rot := range []string{"type: iam_user", "type: general"} {
		y := strings.Replace(inventoryYAML(nil, []string{"{file: x.sh}"}, nil), "type: scripts_only", rot, 1)
		y = strings.Replace(y, "    worker: web-01\n", "    connection: {protocol: winrm, host: 127.0.0.1, admin: token}\n", 1)
		inv := fixture{yaml: y, scripts: map[string]string{"x.sh": "exit 0\n"}}.load(t)
		_, err := Rotate(t.Context(), inv, "svc", Options{})
		var ie *rotation.InputError
		if !errors.As(err, &ie) || !errors.Is(err, ErrNotSupported) {
			t.Fatalf("%s: err = %v, want an InputError wrapping ErrNotSupported", rot, err)
		}
	}
	// A general rotation a rotator could run is refused too: one-shot mode
	// has no record store to keep the new password in.
	y := strings.Replace(inventoryYAML(nil, nil, nil), "type: scripts_only", "type: general", 1)
	_, err := Rotate(t.Context(), fixture{yaml: y}.load(t), "svc", Options{})
	if !errors.Is(err, ErrNotSupported) || !strings.Contains(err.Error(), "postrotate serve") {
		t.Fatalf("general rotation in one-shot mode: %v", err)
	}
	inv := fixture{yaml: inventoryYAML(nil, nil, nil)}.load(t)
	var ie *rotation.InputError
	if _, err := Rotate(t.Context(), inv, "nobody", Options{}); !errors.As(err, &ie) {
		t.Fatalf("unknown user: err = %v, want InputError", err)
	}
}

// An http attachment changes an account through a REST API without a
// script: the worker renders the request from the payload and sends it.
func TestHTTPAttachment(t *testing.T) {
	t.Parallel()
	var got struct {
		auth, key string
		body      map[string]string
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got.auth, got.key = r.Header.Get("Authorization"), r.Header.Get("Idempotency-Key")
		_ = json.NewDecoder(r.Body).Decode(&got.body)
		w.WriteHeader(http.StatusCreated)
		_, _ = fmt.Fprintf(w, `{"ok": true, "password": %q}`, got.body["newPassword"])
	}))
	defer srv.Close()
	att := fmt.Sprintf(`{title: REST, records: [token], http: {url: "%s/users/{{.User}}", headers: {Authorization: 'Bearer {{record "Record with Access Token" "password"}}'}, body: '{"newPassword": {{json .NewPassword}}}', expect_status: [201]}}`, srv.URL)
	out := rotate(t, fixture{yaml: inventoryYAML([]string{att}, nil, nil)}.load(t))
	if out.Failed != 0 || len(out.Results) != 1 {
		t.Fatalf("outcome: %+v", out.Results)
	}
	r := out.Results[0]
	if got.auth != "Bearer tok-3c1d" || got.body["newPassword"] == "" || !strings.HasPrefix(got.key, "postrotate-"+out.RotationID) {
		t.Fatalf("server got %+v", got)
	}
	if strings.Contains(r.Stdout, got.body["newPassword"]) || !strings.Contains(r.Stdout, "********") || r.Title != "REST" {
		t.Fatalf("result = %+v", r)
	}
}
