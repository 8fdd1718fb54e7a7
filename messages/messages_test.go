package messages

import (
	"encoding/json"
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestHostTokenRoundTrip(t *testing.T) {
	t.Parallel()
	for _, host := range []string{
		"gateway-1", "web.01.example.com", "a*b>c", "with space", "under_score", "ünïcode",
		"_41", "tab\there", "", "UPPER-lower-123",
	} {
		tok := HostToken(host)
		if strings.ContainsAny(tok, ".*> \t") {
			t.Errorf("HostToken(%q) = %q: contains a subject metacharacter", host, tok)
		}
		back, err := ParseHostToken(tok)
		if err != nil {
			t.Errorf("ParseHostToken(%q): %v", tok, err)
			continue
		}
		if back != host {
			t.Errorf("round trip %q -> %q -> %q", host, tok, back)
		}
	}
}

func TestHostTokenInjective(t *testing.T) {
	t.Parallel()
	// Hosts that a naive replacement would collapse into one token.
	hosts := []string{"a.b", "a_b", "a-b", "a_2Eb", "a b"}
	seen := map[string]string{}
	for _, h := range hosts {
		tok := HostToken(h)
		if prev, ok := seen[tok]; ok {
			t.Fatalf("%q and %q share token %q", prev, h, tok)
		}
		seen[tok] = h
	}
}

func TestParseHostTokenRejects(t *testing.T) {
	t.Parallel()
	for _, tok := range []string{"a.b", "a_", "a_4", "a_zz", "a_2e", "a b"} {
		if _, err := ParseHostToken(tok); !errors.Is(err, ErrBadToken) {
			t.Errorf("ParseHostToken(%q) err = %v, want ErrBadToken", tok, err)
		}
	}
}

func FuzzHostToken(f *testing.F) {
	f.Add("gateway-1")
	f.Add("a.b*c>d e_f")
	f.Fuzz(func(t *testing.T, host string) {
		tok := HostToken(host)
		back, err := ParseHostToken(tok)
		if err != nil || back != host {
			t.Fatalf("round trip %q -> %q -> %q, %v", host, tok, back, err)
		}
	})
}

func TestSubjects(t *testing.T) {
	t.Parallel()
	var s Subjects
	tests := []struct{ got, want string }{
		{s.Tasks("web.01"), "postrotate.tasks.web_2E01"},
		{s.Result("r1", 3), "postrotate.results.r1.3"},
		{s.Results("r1"), "postrotate.results.r1.>"},
		{s.RotationEvent(EventCompleted), "postrotate.events.rotation.completed"},
		{s.StepEvent(EventFailed), "postrotate.events.step.failed"},
		{s.TasksStream(), "POSTROTATE_TASKS"},
		{Subjects{Prefix: "acme.pr"}.ResultsStream(), "ACME_PR_RESULTS"},
		{s.Consumer("web.01"), "host_web_2E01"},
		{s.Refused("web.01"), "postrotate.refused.web_2E01"},
		{Subjects{Prefix: "acme"}.AllRefused(), "acme.refused.>"},
		{RefusedMsgID(42), "refused-42"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("got %q, want %q", tt.got, tt.want)
		}
	}
}

func validTask() Task {
	now := time.Now()
	return Task{
		SchemaVersion: SchemaVersion, ID: "t1", RotationID: "r-1", Step: 1, Host: "gw",
		Runner: RunnerLocal, RecordUID: "u", CreatedAt: now, ExpiresAt: now.Add(time.Minute),
		Script: Script{Name: "a.sh", Title: "a.sh", Content: []byte("exit 0"), TimeoutMS: 1000},
		Secret: &TaskSecret{Stdin: []byte("e30=\n"), Mask: []string{"pw"}},
	}
}

func TestDecodeTask(t *testing.T) {
	t.Parallel()
	good, err := json.Marshal(validTask())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := DecodeTask(good); err != nil {
		t.Fatalf("DecodeTask(valid): %v", err)
	}
	mutate := map[string]func(*Task){
		"no id":        func(t *Task) { t.ID = "" },
		"bad rotation": func(t *Task) { t.RotationID = "a.b" },
		"step 0":       func(t *Task) { t.Step = 0 },
		"no host":      func(t *Task) { t.Host = "" },
		"no script":    func(t *Task) { t.Script.Name = "" },
		"no timeout":   func(t *Task) { t.Script.TimeoutMS = 0 },
		"no secret":    func(t *Task) { t.Secret = nil },
		"no expiry":    func(t *Task) { t.ExpiresAt = time.Time{} },
		"future":       func(t *Task) { t.SchemaVersion = SchemaVersion + 1 },
	}
	for name, m := range mutate {
		task := validTask()
		m(&task)
		data, _ := json.Marshal(task)
		_, err := DecodeTask(data)
		if !errors.Is(err, ErrInvalidTask) {
			t.Errorf("%s: err = %v, want ErrInvalidTask", name, err)
		}
		if err != nil && strings.Contains(err.Error(), "pw") {
			t.Errorf("%s: error leaks the mask value: %v", name, err)
		}
	}
	if _, err := DecodeTask([]byte("{not json")); !errors.Is(err, ErrInvalidTask) {
		t.Errorf("garbage: err = %v", err)
	}
}

// A task whose secret is sealed validates without it; its secret's own
// checks apply once it is opened (ValidateSecret).
func TestSealedTask(t *testing.T) {
	t.Parallel()
	sealed := validTask()
	sealed.Secret, sealed.SealedSecret = nil, []byte("opaque")
	data, err := json.Marshal(sealed)
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeTask(data)
	if err != nil {
		t.Fatalf("DecodeTask(sealed): %v", err)
	}
	if got.Secret != nil || string(got.SealedSecret) != "opaque" {
		t.Fatalf("decoded secret %+v, sealed %q", got.Secret, got.SealedSecret)
	}
	if err := got.ValidateSecret(); !errors.Is(err, ErrInvalidTask) {
		t.Fatalf("ValidateSecret before opening = %v, want ErrInvalidTask", err)
	}
	both := validTask()
	both.SealedSecret = []byte("opaque")
	if err := both.Validate(); !errors.Is(err, ErrInvalidTask) {
		t.Fatalf("Validate(clear and sealed secret) = %v, want ErrInvalidTask", err)
	}
	// Rules that need the secret do not apply to a sealed task...
	rot := validTask()
	rot.Runner, rot.Rotation = RunnerRotate, &Rotation{Kind: "linux", Login: "svc"}
	rot.Connection = &Connection{Protocol: "ssh", Host: "m1", Port: 22}
	rot.Secret, rot.SealedSecret = nil, []byte("opaque")
	if err := rot.Validate(); err != nil {
		t.Fatalf("Validate(sealed rotate task) = %v", err)
	}
	// ... but those that do not still do.
	rot.Connection.Host = ""
	if err := rot.Validate(); !errors.Is(err, ErrInvalidTask) {
		t.Fatalf("Validate(sealed rotate task without host) = %v, want ErrInvalidTask", err)
	}
}

func TestValidateSecret(t *testing.T) {
	t.Parallel()
	cred := &Credential{Login: "root", Password: "pw"}
	conn := &Connection{Protocol: "ssh", Host: "m1", Port: 22}
	tests := []struct {
		name   string
		runner string
		conn   *Connection
		secret *TaskSecret
		ok     bool
	}{
		{"local", RunnerLocal, nil, &TaskSecret{Stdin: []byte("e30=\n")}, true},
		{"local without stdin", RunnerLocal, nil, &TaskSecret{}, false},
		{"no secret", RunnerLocal, nil, nil, false},
		{"ssh", RunnerSSH, conn, &TaskSecret{Stdin: []byte("e30=\n"), Credential: cred}, true},
		{"ssh without credential", RunnerSSH, conn, &TaskSecret{Stdin: []byte("e30=\n")}, false},
		{"winrm without credential", RunnerWinRM, conn, &TaskSecret{Stdin: []byte("e30=\n")}, false},
		{"rotate", RunnerRotate, nil, &TaskSecret{NewPassword: "pw"}, true},
		{"rotate without new password", RunnerRotate, nil, &TaskSecret{}, false},
		{"rotate with a connection", RunnerRotate, conn, &TaskSecret{NewPassword: "pw", Credential: cred}, true},
		{"rotate with a connection, no credential", RunnerRotate, conn, &TaskSecret{NewPassword: "pw"}, false},
	}
	for _, tt := range tests {
		task := Task{Runner: tt.runner, Connection: tt.conn, Secret: tt.secret}
		err := task.ValidateSecret()
		if tt.ok && err != nil {
			t.Errorf("%s: ValidateSecret = %v", tt.name, err)
		}
		if !tt.ok && !errors.Is(err, ErrInvalidTask) {
			t.Errorf("%s: ValidateSecret = %v, want ErrInvalidTask", tt.name, err)
		}
		if err != nil && strings.Contains(err.Error(), "pw") {
			t.Errorf("%s: error shows a secret: %v", tt.name, err)
		}
	}
}

func TestResultKeeperMethods(t *testing.T) {
	t.Parallel()
	r := RotationResult{Success: true}
	if !r.WasSuccess() || r.WasFailure() {
		t.Fatal("success result")
	}
	r.Success = false
	if r.WasSuccess() || !r.WasFailure() {
		t.Fatal("failed result")
	}
}

func TestDecodeResultVersion(t *testing.T) {
	t.Parallel()
	if _, err := DecodeResult([]byte(`{"schema_version":99}`)); !errors.Is(err, ErrUnsupportedVersion) {
		t.Fatalf("err = %v", err)
	}
	if _, err := DecodeResult([]byte(`{"schema_version":1,"uid":"x"}`)); err != nil {
		t.Fatal(err)
	}
}

// jsonNames returns the JSON names of a struct type's fields.
func jsonNames(t reflect.Type) []string {
	var names []string
	for f := range t.Fields() {
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		names = append(names, name)
	}
	slices.Sort(names)
	return names
}

type schemaObject struct {
	Required   []string                   `json:"required"`
	Properties map[string]json.RawMessage `json:"properties"`
}

func checkSchema(t *testing.T, name string, typ reflect.Type, obj schemaObject) {
	t.Helper()
	var props []string
	for p := range obj.Properties {
		props = append(props, p)
	}
	slices.Sort(props)
	if want := jsonNames(typ); !slices.Equal(props, want) {
		t.Errorf("%s schema properties %v, Go fields %v", name, props, want)
	}
	for _, r := range obj.Required {
		if _, ok := obj.Properties[r]; !ok {
			t.Errorf("%s schema requires unknown property %q", name, r)
		}
	}
}

// The schemas in schema/ describe exactly the Go types.
func TestSchemasMatchTypes(t *testing.T) {
	t.Parallel()
	var rs schemaObject
	if err := json.Unmarshal(RotationResultSchema, &rs); err != nil {
		t.Fatal(err)
	}
	checkSchema(t, "RotationResult", reflect.TypeFor[RotationResult](), rs)

	var es struct {
		Defs map[string]schemaObject `json:"$defs"`
	}
	if err := json.Unmarshal(EventSchema, &es); err != nil {
		t.Fatal(err)
	}
	checkSchema(t, "RotationEvent", reflect.TypeFor[RotationEvent](), es.Defs["RotationEvent"])
	checkSchema(t, "StepEvent", reflect.TypeFor[StepEvent](), es.Defs["StepEvent"])
}

// Every required property is present in a marshalled zero-ish result, so a
// result a worker writes validates.
func TestResultCarriesRequiredFields(t *testing.T) {
	t.Parallel()
	var rs schemaObject
	if err := json.Unmarshal(RotationResultSchema, &rs); err != nil {
		t.Fatal(err)
	}
	data, _ := json.Marshal(RotationResult{SchemaVersion: 1, RotationID: "r", Step: 1})
	var got map[string]any
	if err := json.Unmarshal(data, &got); err != nil {
		t.Fatal(err)
	}
	for _, r := range rs.Required {
		if _, ok := got[r]; !ok {
			t.Errorf("marshalled result lacks required %q", r)
		}
	}
}
