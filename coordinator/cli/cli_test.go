package cli

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/postrotate/postrotate/messages"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const example = "../../examples/inventory.yaml"

func run(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = Main(args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestRotateExampleJSON(t *testing.T) {
	t.Parallel()
	code, stdout, stderr := run(t, "rotate", "--inventory", example, "--user", "svc-app", "--json")
	if code != ExitOK {
		t.Fatalf("exit %d, stderr:\n%s\nstdout:\n%s", code, stderr, stdout)
	}
	var results []messages.RotationResult
	if err := json.Unmarshal([]byte(stdout), &results); err != nil {
		t.Fatalf("stdout is not a JSON array of results: %v\n%s", err, stdout)
	}
	if len(results) != 3 {
		t.Fatalf("%d results", len(results))
	}
	for i, r := range results {
		if !r.WasSuccess() || r.Step != i+1 || r.SchemaVersion != messages.SchemaVersion {
			t.Errorf("result %d = %+v", i, r)
		}
	}
	if strings.Contains(stdout, "demo-api-token-3f9c2a") || strings.Contains(stdout, "Old-Passw0rd-demo") {
		t.Fatal("a secret reached the output")
	}
}

func TestRotateTable(t *testing.T) {
	t.Parallel()
	code, stdout, stderr := run(t, "rotate", "-i", example, "-u", "svc-app")
	if code != ExitOK {
		t.Fatalf("exit %d, stderr:\n%s", code, stderr)
	}
	for _, want := range []string{"STEP", "Rotate via REST API", "web-01", "Notify the team", "3 of 3 steps succeeded"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("table lacks %q:\n%s", want, stdout)
		}
	}
}

func writeInventory(t *testing.T, yaml string, scripts map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range scripts {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	path := filepath.Join(dir, "inv.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

const failingInventory = `version: 1
records:
  - {uid: cfg, type: pamConfiguration, gateway: gw}
  - uid: u
    type: pamUser
    fields: [{type: login, value: u}, {type: password, value: p}]
    rotation: {type: scripts_only, configuration: cfg}
    scripts: [{file: fail.sh}, {file: ok.sh}]
`

func TestRotateFailedScriptExits1(t *testing.T) {
	t.Parallel()
	inv := writeInventory(t, failingInventory, map[string]string{"fail.sh": "echo broken >&2\nexit 4\n", "ok.sh": "exit 0\n"})
	code, stdout, _ := run(t, "rotate", "--inventory", inv, "--user", "u")
	if code != ExitFailed {
		t.Fatalf("exit %d, want 1\n%s", code, stdout)
	}
	if !strings.Contains(stdout, "FAILED") || !strings.Contains(stdout, "broken") || !strings.Contains(stdout, "1 of 2 steps succeeded") {
		t.Fatalf("table:\n%s", stdout)
	}
}

func TestBadInputExits2(t *testing.T) {
	t.Parallel()
	bad := writeInventory(t, `version: 1
records:
  - {uid: cfg, type: pamConfiguration, gateway: gw}
  - {uid: cfg, type: login}
  - uid: u
    type: pamUser
    rotation: {type: scripts_only, resource: nope, schedule: "61 * * * *"}
    scripts: [{file: missing.sh}]
`, nil)
	good := writeInventory(t, failingInventory, map[string]string{"fail.sh": "exit 1\n", "ok.sh": "exit 0\n"})
	tests := []struct {
		name string
		args []string
		want []string // on stderr
	}{
		{"no flags", []string{"rotate"}, []string{"required flag"}},
		{"unknown flag", []string{"rotate", "--nope"}, []string{"unknown flag"}},
		{"unknown command", []string{"frobnicate"}, []string{"unknown command"}},
		{"missing file", []string{"rotate", "-i", "/nonexistent/inv.yaml", "-u", "u"}, []string{"/nonexistent/inv.yaml"}},
		{"bad inventory", []string{"rotate", "-i", bad, "-u", "u"}, []string{"records[1].uid", "records[2].rotation.resource", "records[2].rotation.schedule", "records[2].scripts[0].file"}},
		{"validate bad", []string{"validate", "-i", bad}, []string{"records[1].uid", "records[2].scripts[0].file"}},
		{"unknown user", []string{"rotate", "-i", good, "-u", "nobody"}, []string{"nobody"}},
		{"bad log level", []string{"rotate", "-i", good, "-u", "u", "--log-level", "loud"}, []string{"--log-level"}},
		{"zero replicas", []string{"serve", "-i", good, "--replicas", "0"}, []string{"--replicas 0"}},
		{"replicas without a cluster", []string{"serve", "-i", good, "--replicas", "3"}, []string{"--replicas 3", "--nats URL"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			code, _, stderr := run(t, tt.args...)
			if code != ExitUsage {
				t.Fatalf("exit %d, want 2; stderr:\n%s", code, stderr)
			}
			for _, w := range tt.want {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr lacks %q:\n%s", w, stderr)
				}
			}
		})
	}
}

func TestValidateGood(t *testing.T) {
	t.Parallel()
	code, stdout, stderr := run(t, "validate", "--inventory", example)
	if code != ExitOK || !strings.Contains(stdout, "ok") {
		t.Fatalf("exit %d\n%s%s", code, stdout, stderr)
	}
}

func TestHelpEverywhere(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{{"--help"}, {"rotate", "--help"}, {"validate", "--help"}, {"version"}} {
		code, stdout, _ := run(t, args...)
		if code != ExitOK || stdout == "" {
			t.Errorf("%v: exit %d, stdout %q", args, code, stdout)
		}
	}
}
