package inventory

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/postrotate/postrotate/coordinator/password"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func load(t *testing.T, name string) *Inventory {
	t.Helper()
	inv, err := Load(filepath.Join("testdata", name))
	if err != nil {
		t.Fatalf("Load(%s): %v", name, err)
	}
	return inv
}

func mustRecord(t *testing.T, inv *Inventory, uid string) *Record {
	t.Helper()
	r, ok := inv.Record(uid)
	if !ok {
		t.Fatalf("no record %q", uid)
	}
	return r
}

func TestLoadGood(t *testing.T) {
	t.Parallel()
	inv := load(t, "good.yaml")
	abs, _ := filepath.Abs("testdata")
	if inv.Version != 1 || inv.Dir != abs || len(inv.Records) != 13 {
		t.Fatalf("version %d, dir %q, %d records", inv.Version, inv.Dir, len(inv.Records))
	}
	checkGoodConfiguration(t, inv)
	checkGoodWorkerMachine(t, inv)
	checkGoodWinRMMachine(t, inv)
	checkGoodSSHMachine(t, inv)
	checkGoodFieldValues(t, inv)
	checkGoodUser(t, inv)
	checkGoodRotationDefaults(t, inv)
	if _, ok := inv.Record("nope"); ok {
		t.Error("Record(nope) found something")
	}
}

// checkGoodConfiguration checks good.yaml's configuration and its script,
// whose name and title default to the file's name.
func checkGoodConfiguration(t *testing.T, inv *Inventory) {
	t.Helper()
	cfg := mustRecord(t, inv, "cfg-local")
	if cfg.Type != TypeConfiguration || cfg.Gateway != "gateway-1" || cfg.Title != "Local configuration" {
		t.Errorf("cfg-local = %+v", cfg)
	}
	notify, _ := os.ReadFile("testdata/scripts/notify.sh")
	if got := cfg.Scripts[0]; got.File != "scripts/notify.sh" || got.Name != "notify.sh" || got.Title != "notify.sh" ||
		got.Timeout != DefaultScriptTimeout || string(got.Content) != string(notify) || got.Command != "" || got.Records != nil {
		t.Errorf("cfg-local script = %+v", got)
	}
}

// checkGoodWorkerMachine checks good.yaml's machine with a worker.
func checkGoodWorkerMachine(t *testing.T, inv *Inventory) {
	t.Helper()
	web := mustRecord(t, inv, "web-01")
	if web.Worker != "web-01" || web.Connection != nil || web.Scripts[0].Name != "restart.sh" {
		t.Errorf("web-01 = %+v", web)
	}
	if v, ok := web.Fields[0].Value.(map[string]any); !ok || v["hostName"] != "web-01" || v["port"] != "22" {
		t.Errorf("web-01 host value = %#v", web.Fields[0].Value)
	}
}

// checkGoodWinRMMachine checks good.yaml's machine reached over WinRM:
// the HTTPS port by default, the script's own title and timeout.
func checkGoodWinRMMachine(t *testing.T, inv *Inventory) {
	t.Helper()
	win := mustRecord(t, inv, "win-01")
	if c := win.Connection; c == nil || c.Protocol != ProtocolWinRM || !c.HTTPS || c.Port != 5986 || c.Admin != "win-admin" || c.Host != "10.0.0.7" {
		t.Errorf("win-01 connection = %+v", win.Connection)
	}
	if s := win.Scripts[0]; s.Title != "Windows user script" || s.Name != "user.ps1" || s.Timeout != 90*time.Second {
		t.Errorf("win-01 script = %+v", s)
	}
}

// checkGoodSSHMachine checks good.yaml's machine reached over SSH: port 22
// by default, the title defaults to the uid.
func checkGoodSSHMachine(t *testing.T, inv *Inventory) {
	t.Helper()
	if c := mustRecord(t, inv, "lin-02").Connection; c == nil || c.Protocol != ProtocolSSH || c.Port != 22 || c.HostKey == "" {
		t.Errorf("lin-02 connection = %+v", c)
	}
	if title := mustRecord(t, inv, "lin-02").Title; title != "lin-02" {
		t.Errorf("lin-02 title = %q, want the uid", title)
	}
}

// checkGoodFieldValues checks the shapes of field values and the text kept
// in secret fields.
func checkGoodFieldValues(t *testing.T, inv *Inventory) {
	t.Helper()
	db := mustRecord(t, inv, "db-01")
	wantValues := []any{
		map[string]any{"hostName": "db.internal", "port": 5432},
		[]any{"a", "b", "c"},
		[]any{},
		nil,
	}
	for i, want := range wantValues {
		if got := db.Fields[i].Value; !reflect.DeepEqual(got, want) {
			t.Errorf("db-01 field %d value = %#v, want %#v", i, got, want)
		}
	}

	api := mustRecord(t, inv, "api-access")
	if api.Password() != "s3cret-token" || api.Login() != "" {
		t.Errorf("api-access password/login wrong")
	}
	if pin := api.Fields[2]; pin.Value != "1234" {
		t.Errorf("a secret field keeps the text written: pinCode value = %#v", pin.Value)
	}
	if !api.Fields[3].Secret || api.Fields[0].Secret {
		t.Errorf("secret flags = %v, %v; want only the explicit one set", api.Fields[3].Secret, api.Fields[0].Secret)
	}
}

// checkGoodUser checks good.yaml's scripts_only user: its helpers, its
// rotation settings, its script and its schedule in its time zone.
func checkGoodUser(t *testing.T, inv *Inventory) {
	t.Helper()
	user := mustRecord(t, inv, "svc-user")
	if user.Login() != "svc@example.com" || user.Password() != "Old-Passw0rd" || !user.NOOP() || user.Title != "svc-app" {
		t.Errorf("svc-user helpers: login %q, noop %v", user.Login(), user.NOOP())
	}
	wantRot := &Rotation{
		Type: RotationScriptsOnly, Resource: "web-01", Configuration: "cfg-local",
		Schedule: "0 3 * * *", Timezone: "Europe/Paris",
		Complexity: password.Rules{Length: 32, Upper: 2, Lower: 2, Digits: 2, Special: 2, SpecialChars: "!@#$%"},
	}
	if !reflect.DeepEqual(user.Rotation, wantRot) {
		t.Errorf("svc-user rotation = %+v, want %+v", user.Rotation, wantRot)
	}
	if s := user.Scripts[0]; s.Command != "python3" || !slices.Equal(s.Records, []string{"api-access"}) || s.Timeout != 2*time.Minute {
		t.Errorf("svc-user script = %+v", s)
	}
	sched, err := user.Rotation.ParsedSchedule()
	if err != nil {
		t.Fatal(err)
	}
	from := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	if got := sched.Next(from); !got.Equal(time.Date(2025, 1, 1, 2, 0, 0, 0, time.UTC)) {
		t.Errorf("next rotation = %v, want 03:00 in Paris", got)
	}
}

// checkGoodRotationDefaults checks the rotations that leave settings out:
// the only configuration, the default complexity.
func checkGoodRotationDefaults(t *testing.T, inv *Inventory) {
	t.Helper()
	dbUser := mustRecord(t, inv, "db-user")
	if r := dbUser.Rotation; r.Configuration != "cfg-local" || r.Complexity != (password.Rules{}).WithDefaults() || dbUser.NOOP() {
		t.Errorf("db-user rotation defaults = %+v", r)
	}
	if r := mustRecord(t, inv, "iam-user").Rotation; r.Type != RotationIAMUser || r.Resource != "" || r.Configuration != "cfg-local" {
		t.Errorf("iam-user rotation = %+v", r)
	}
}

func TestJSONEqualsYAML(t *testing.T) {
	t.Parallel()
	y, j := load(t, "good.yaml"), load(t, "good.json")
	if !reflect.DeepEqual(y, j) {
		for i := range y.Records {
			if !reflect.DeepEqual(y.Records[i], j.Records[i]) {
				t.Errorf("record %d differs:\nyaml %+v\njson %+v", i, y.Records[i], j.Records[i])
			}
		}
		t.Fatal("the JSON inventory differs from the YAML one")
	}
}

func validationError(t *testing.T, err error) *ValidationError {
	t.Helper()
	if !errors.Is(err, ErrInvalidInventory) {
		t.Fatalf("error %v does not match ErrInvalidInventory", err)
	}
	var ve *ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("error %T %v is not a *ValidationError", err, err)
	}
	if len(ve.Problems) == 0 {
		t.Fatal("ValidationError without problems")
	}
	return ve
}

func paths(ve *ValidationError) []string {
	out := make([]string, len(ve.Problems))
	for i, p := range ve.Problems {
		out[i] = p.Path
	}
	return out
}

// badInventory is a file of testdata that Load refuses, and the problems
// it must report.
type badInventory struct {
	file  string
	paths []string // every problem path, in order
	// lines, when set, are the expected Line of each problem.
	lines []int
}

var badInventories = []badInventory{
	{file: "bad_malformed.yaml", paths: []string{""}},
	{
		file: "bad_unknown_reference.yaml",
		paths: []string{
			"records[1].connection.admin",
			"records[2].rotation.resource",
			"records[2].scripts[0].records[0]",
			"records[3].rotation.configuration",
		},
		lines: []int{6, 10, 12, 15},
	},
	{file: "bad_duplicate_uid.yaml", paths: []string{"records[1].uid", "records[3].uid"}, lines: []int{4, 6}},
	{
		file:  "bad_missing_script.yaml",
		paths: []string{"records[0].scripts[1].file", "records[0].scripts[2].file", "records[0].scripts[3].file"},
	},
	{
		file: "bad_cron.yaml",
		paths: []string{
			"records[1].rotation.schedule",
			"records[2].rotation.schedule",
			"records[3].rotation.schedule",
			"records[4].rotation.timezone",
			"records[5].rotation.schedule",
		},
	},
	{
		file: "bad_complexity.yaml",
		paths: []string{
			"records[1].rotation.complexity.length",
			"records[1].rotation.complexity.special",
			"records[1].rotation.complexity.special_chars",
		},
	},
	{
		file: "bad_unknown_key.yaml",
		paths: []string{
			"owner",
			"records[0].scripts[0].timout",
			"records[1].conection",
			"records[2].fields[0]",
			"records[2].rotation.complexity.symbols",
		},
		lines: []int{2, 8, 11, 15, 16},
	},
	{
		file: "bad_several.yaml",
		paths: []string{
			"version",
			"records[0].gateway",
			"records[0].uid",
			"records[1].gateway",
			"records[2].connection",
			"records[2].connection.admin",
			"records[2].connection.host",
			"records[2].connection.port",
			"records[2].connection.protocol",
			"records[2].scripts[0].timeout",
			"records[3].scripts",
			"records[4].gateway",
			"records[4].rotation",
			"records[4].rotation.resource",
			"records[4].scripts",
			"records[5].type",
			"records[6].fields[0].type",
			"records[6].fields[1].value",
			"records[6].rotation.configuration",
			"records[6].rotation.resource",
			"records[6].rotation.schedule",
			"records[6].rotation.type",
			"records[7].uid",
			"records[8].rotation.configuration",
			"records[8].rotation.resource",
		},
	},
}

func TestBadInventories(t *testing.T) {
	t.Parallel()
	for _, tt := range badInventories {
		t.Run(tt.file, func(t *testing.T) {
			t.Parallel()
			inv, err := Load(filepath.Join("testdata", tt.file))
			if inv != nil {
				t.Fatal("a bad inventory was returned")
			}
			ve := validationError(t, err)
			if got := paths(ve); !slices.Equal(got, tt.paths) {
				t.Fatalf("problem paths:\n got %q\nwant %q\nerror:\n%v", got, tt.paths, err)
			}
			for i, want := range tt.lines {
				if got := ve.Problems[i].Line; got != want {
					t.Errorf("problem %q at line %d, want %d", ve.Problems[i].Path, got, want)
				}
			}
			if lines := strings.Split(ve.Error(), "\n"); len(lines) != len(ve.Problems) {
				t.Errorf("Error() has %d lines for %d problems", len(lines), len(ve.Problems))
			}
		})
	}
}

func TestMalformedYAMLNamesTheLine(t *testing.T) {
	t.Parallel()
	_, err := Parse([]byte("version: 1\nrecords:\n  - uid: a\n   type: login\n"), t.TempDir())
	ve := validationError(t, err)
	if p := ve.Problems[0]; p.Path != "" || !strings.HasPrefix(p.Message, "line ") {
		t.Fatalf("problem = %+v, want a message starting with the line", p)
	}
}

func TestProblemsNeverShowFieldValues(t *testing.T) {
	t.Parallel()
	const secret = "Sup3r-S3cret-Value"
	doc := `version: 1
records:
  - uid: u
    type: pamUser
    fields:
      - {type: password, Sup3r-S3cret-Value}
      - {type: password, value: Sup3r-S3cret-Value, Sup3r-S3cret-Value: 1}
      - {type: password, value: !!int Sup3r-S3cret-Value, label: [x]}
      - {type: text, value: !!int Sup3r-S3cret-Value}
      - {type: text, value: !!float Sup3r-S3cret-Value}
      - {type: text, value: {Sup3r-S3cret-Value: 1, Sup3r-S3cret-Value: 2}}
      - {type: text, value: [!!bool Sup3r-S3cret-Value]}
      - {value: Sup3r-S3cret-Value}
      - Sup3r-S3cret-Value
      - [Sup3r-S3cret-Value]
`
	_, err := Parse([]byte(doc), t.TempDir())
	ve := validationError(t, err)
	if strings.Contains(err.Error(), secret) {
		t.Fatalf("a field value leaked into the error:\n%v", err)
	}
	if len(ve.Problems) < 9 {
		t.Fatalf("want a problem per bad field, got:\n%v", err)
	}
}

func TestStructuralProblems(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	tests := []struct {
		name  string
		doc   string
		paths []string
	}{
		{"empty", "", []string{""}},
		{"only comments", "# nothing\n", []string{""}},
		{"null document", "null\n", []string{""}},
		{"scalar root", "hello\n", []string{""}},
		{"list root", "[1, 2]\n", []string{""}},
		{"two documents", "version: 1\n---\nversion: 1\n", []string{""}},
		{"no records", "version: 1\n", []string{"records"}},
		{"empty records", "version: 1\nrecords: []\n", []string{"records"}},
		{"records not a list", "version: 1\nrecords: {a: 1}\n", []string{"records"}},
		{"missing version", "records: [{uid: a, type: login}]\n", []string{"version"}},
		{"version not an integer", "version: one\nrecords: [{uid: a, type: login}]\n", []string{"version"}},
		{"duplicate key", "version: 1\nversion: 1\nrecords: [{uid: a, type: login}]\n", []string{"version"}},
		{"record not a mapping", "version: 1\nrecords: [a, null]\n", []string{"records[0]", "records[1]"}},
		{"key not a string", "version: 1\nrecords: [{uid: a, type: login, [x]: 1}]\n", []string{"records[0]"}},
		{"bad uids", "version: 1\nrecords:\n- {uid: 'a b', type: login}\n- {uid: 'a*', type: login}\n- {uid: 'a>', type: login}\n- {uid: 'a/b', type: login}\n- {uid: \"a\\tb\", type: login}\n- {uid: [a], type: login}\n",
			[]string{"records[0].uid", "records[1].uid", "records[2].uid", "records[3].uid", "records[4].uid", "records[5].uid", "records[5].uid"}},
		{"long host id", "version: 1\nrecords:\n- {uid: c, type: pamConfiguration, gateway: " + strings.Repeat("g", MaxHostIDLength+1) + "}\n", []string{"records[0].gateway"}},
		{"worker on a database", "version: 1\nrecords:\n- {uid: d, type: pamDatabase, worker: w}\n", []string{"records[0].worker"}},
		{"empty worker", "version: 1\nrecords:\n- {uid: m, type: pamMachine, worker: ''}\n", []string{"records[0].worker"}},
		{"worker with a space", "version: 1\nrecords:\n- {uid: m, type: pamMachine, worker: 'w 1'}\n", []string{"records[0].worker"}},
		{"connection on a user", "version: 1\nrecords:\n- {uid: a, type: login}\n- {uid: u, type: pamUser, connection: {protocol: ssh, host: h, admin: a}}\n", []string{"records[1].connection"}},
		{"ssh options", "version: 1\nrecords:\n- {uid: a, type: login}\n- {uid: m, type: pamMachine, connection: {protocol: ssh, host: h, port: 0, https: true, admin: a, host_key: k, insecure_ignore_host_key: true}}\n",
			[]string{"records[1].connection.https", "records[1].connection.insecure_ignore_host_key", "records[1].connection.port"}},
		{"winrm options", "version: 1\nrecords:\n- {uid: a, type: login}\n- {uid: m, type: pamMachine, connection: {protocol: winrm, host: h, admin: a, known_hosts: k, https: yes}}\n",
			[]string{"records[1].connection.https", "records[1].connection.known_hosts"}},
		{"connection without protocol or admin", "version: 1\nrecords:\n- {uid: m, type: pamMachine, connection: {host: h}}\n", []string{"records[0].connection.admin", "records[0].connection.protocol"}},
		{"admin is a machine", "version: 1\nrecords:\n- {uid: m, type: pamMachine, connection: {protocol: ssh, host: h, admin: m}}\n", []string{"records[0].connection.admin"}},
		{"no configuration for the rotation", "version: 1\nrecords:\n- {uid: u, type: pamUser, rotation: {type: scripts_only}}\n", []string{"records[0].rotation.configuration"}},
		{"rotation type missing", "version: 1\nrecords:\n- {uid: c, type: pamConfiguration, gateway: g}\n- {uid: u, type: pamUser, rotation: {}}\n", []string{"records[1].rotation.type"}},
		{"configuration is a machine", "version: 1\nrecords:\n- {uid: m, type: pamMachine}\n- {uid: u, type: pamUser, rotation: {type: scripts_only, configuration: m}}\n", []string{"records[1].rotation.configuration"}},
		{"script timeouts", "version: 1\nrecords:\n- uid: c\n  type: pamConfiguration\n  gateway: g\n  scripts:\n  - {file: scripts/notify.sh, timeout: 0s}\n  - {file: scripts/notify.sh, timeout: 30}\n  - {file: scripts/notify.sh, timeout: -1m}\n",
			[]string{"records[0].scripts[0].file", "records[0].scripts[0].timeout", "records[0].scripts[1].file", "records[0].scripts[1].timeout", "records[0].scripts[2].file", "records[0].scripts[2].timeout"}},
		{"script records", "version: 1\nrecords:\n- uid: c\n  type: pamConfiguration\n  gateway: g\n  scripts:\n  - {file: /dev/null, records: [c, c, '', [x]]}\n",
			[]string{"records[0].scripts[0].file", "records[0].scripts[0].records[1]", "records[0].scripts[0].records[2]", "records[0].scripts[0].records[3]"}},
		{"complexity not a mapping", "version: 1\nrecords:\n- {uid: c, type: pamConfiguration, gateway: g}\n- {uid: u, type: pamUser, rotation: {type: scripts_only, complexity: 12}}\n", []string{"records[1].rotation.complexity"}},
		{"complexity values", "version: 1\nrecords:\n- {uid: c, type: pamConfiguration, gateway: g}\n- {uid: u, type: pamUser, rotation: {type: scripts_only, complexity: {length: '12', upper: 1.5, lower: 99999999999999999999999}}}\n",
			[]string{"records[1].rotation.complexity.length", "records[1].rotation.complexity.lower", "records[1].rotation.complexity.upper"}},
		{"version overflow", "version: 99999999999999999999\nrecords: [{uid: a, type: login}]\n", []string{"version"}},
		{"binary value", "version: 1\nrecords: [{uid: a, type: login, fields: [{type: text, value: !!binary /w==}, {type: text, value: !!binary aGk=}]}]\n", []string{"records[0].fields[0].value"}},
		{"bad merge", "version: 1\nrecords:\n- {<<: 1, uid: c, type: login}\n", []string{"records[0]"}},
		{"many records sort numerically", "version: 1\nrecords:\n" + strings.Repeat("- {uid: x, type: login}\n", 12), manyDuplicates(12)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := Parse([]byte(tt.doc), dir)
			ve := validationError(t, err)
			if got := paths(ve); !slices.Equal(got, tt.paths) {
				t.Fatalf("problem paths:\n got %q\nwant %q\nerror:\n%v", got, tt.paths, err)
			}
		})
	}
}

func manyDuplicates(n int) []string {
	var out []string
	for i := 1; i < n; i++ {
		out = append(out, "records["+strconv.Itoa(i)+"].uid")
	}
	return out
}
