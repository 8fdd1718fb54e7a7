package inventory

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestAnchorsAliasesAndMerges(t *testing.T) {
	t.Parallel()
	doc := `version: 1
records:
  - uid: cfg
    type: pamConfiguration
    gateway: gw
  - uid: admin
    type: login
  - &machine
    uid: m1
    type: pamMachine
    connection: &conn {protocol: ssh, host: h1, admin: admin}
  - <<: *machine
    uid: m2
    connection:
      <<: *conn
      host: h2
      port: 2222
  - uid: m3
    type: pamMachine
    connection: *conn
`
	inv, err := Parse([]byte(doc), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	m1, m2, m3 := mustRecord(t, inv, "m1"), mustRecord(t, inv, "m2"), mustRecord(t, inv, "m3")
	if m2.Type != TypeMachine || m2.Connection.Host != "h2" || m2.Connection.Port != 2222 || m2.Connection.Admin != "admin" {
		t.Errorf("m2 = %+v / %+v", m2, m2.Connection)
	}
	if !reflect.DeepEqual(m1.Connection, m3.Connection) || m1.Connection == m3.Connection {
		t.Errorf("an alias must give an equal, separate connection")
	}
}

func TestAliasExpansionIsBounded(t *testing.T) {
	t.Parallel()
	var b strings.Builder
	b.WriteString("version: 1\nx0: &x0 [a, a, a, a, a, a, a, a, a, a]\n")
	for i := 1; i < 10; i++ {
		b.WriteString("x" + string(rune('0'+i)) + ": &x" + string(rune('0'+i)) + " [")
		for j := range 10 {
			if j > 0 {
				b.WriteString(", ")
			}
			b.WriteString("*x" + string(rune('0'+i-1)))
		}
		b.WriteString("]\n")
	}
	b.WriteString("records:\n- {uid: u, type: login, fields: [{type: text, value: *x9}]}\n")
	start := time.Now()
	_, err := Parse([]byte(b.String()), t.TempDir())
	ve := validationError(t, err)
	found := false
	for _, p := range ve.Problems {
		if p.Path == "" && strings.Contains(p.Message, "too large") {
			found = true
		}
	}
	if !found {
		t.Fatalf("want a too-large problem, got:\n%v", err)
	}
	t.Logf("refused in %v", time.Since(start))
}

func TestRecursiveAliasIsRefused(t *testing.T) {
	t.Parallel()
	for _, doc := range []string{
		"version: 1\nrecords:\n- {uid: u, type: login, fields: [{type: text, value: &a [*a]}]}\n",
		"version: 1\nrecords:\n- &a {uid: u, type: login, <<: *a}\n",
	} {
		if _, err := Parse([]byte(doc), t.TempDir()); err == nil {
			t.Errorf("recursive alias accepted:\n%s", doc)
		}
	}
}

func TestScriptFiles(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "ok.sh"), []byte("#!/bin/sh\necho ok\n"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	abs := filepath.Join(dir, "ok.sh")
	doc := `version: 1
records:
  - uid: cfg
    type: pamConfiguration
    gateway: gw
    scripts:
      - {file: ok.sh}
      - {file: "` + abs + `", name: abs}
      - {file: 'sub\win.ps1'}
      - {file: sub}
`
	_, err := Parse([]byte(doc), dir)
	ve := validationError(t, err)
	if got := paths(ve); !reflect.DeepEqual(got, []string{"records[0].scripts[2].file", "records[0].scripts[3].file"}) {
		t.Fatalf("paths = %q\n%v", got, err)
	}
	inv, err := Parse([]byte(strings.Join(strings.Split(doc, "\n")[:8], "\n")), dir)
	if err != nil {
		t.Fatal(err)
	}
	s := inv.Records[0].Scripts
	if string(s[0].Content) != "#!/bin/sh\necho ok\n" || string(s[1].Content) != string(s[0].Content) || s[1].Name != "abs" || s[1].File != abs {
		t.Errorf("scripts = %+v", s)
	}
}

func TestNOOP(t *testing.T) {
	t.Parallel()
	tests := []struct {
		field Field
		want  bool
	}{
		{Field{Type: "text", Label: "NOOP", Value: "True"}, true},
		{Field{Type: "text", Label: "NOOP", Value: "TRUE"}, true},
		{Field{Type: "text", Label: "NOOP", Value: " true "}, true},
		{Field{Type: "text", Label: "NOOP", Value: true}, true},
		{Field{Type: "text", Label: "NOOP", Value: []any{"true"}}, true},
		{Field{Type: "text", Label: "NOOP", Value: "False"}, false},
		{Field{Type: "text", Label: "NOOP", Value: nil}, false},
		{Field{Type: "text", Label: "NOOP", Value: []any{}}, false},
		{Field{Type: "text", Label: "noop", Value: "True"}, false},
		{Field{Type: "secret", Label: "NOOP", Value: "True"}, false},
		{Field{Type: "text", Label: "NOOP", Value: "yes"}, false},
	}
	for _, tt := range tests {
		r := &Record{Fields: []Field{{Type: "login", Value: "x"}, tt.field}}
		if got := r.NOOP(); got != tt.want {
			t.Errorf("NOOP() with %+v = %v, want %v", tt.field, got, tt.want)
		}
	}
}

func TestLoginAndPassword(t *testing.T) {
	t.Parallel()
	r := &Record{Fields: []Field{
		{Type: "text", Value: "not this"},
		{Type: "login", Value: []any{"first", "second"}},
		{Type: "login", Value: "later"},
		{Type: "password", Value: nil},
		{Type: "password", Value: "ignored: the first password field counts"},
	}}
	if r.Login() != "first" || r.Password() != "" {
		t.Fatalf("Login() = %q, Password() = %q", r.Login(), r.Password())
	}
	if (&Record{}).Login() != "" {
		t.Fatal("Login() of an empty record")
	}
}

func TestPayloadRecord(t *testing.T) {
	t.Parallel()
	obj := map[string]any{"hostName": "h", "port": "22"}
	r := &Record{UID: "u", Type: "login", Title: "T", Fields: []Field{
		{Type: "login", Value: "me"},
		{Type: "pamHostname", Value: obj},
		{Type: "text", Label: "many", Value: []any{"a", map[string]any{"k": []any{1}}}},
		{Type: "text", Label: "none", Value: nil},
		{Type: "text", Label: "empty", Value: []any{}},
		{Type: "text", Label: "hidden", Value: "x", Secret: true},
	}}
	p := r.PayloadRecord()
	if p.UID != "u" || p.Type != "login" || p.Title != "T" || len(p.Fields) != 6 {
		t.Fatalf("PayloadRecord() = %+v", p)
	}
	want := [][]any{{"me"}, {obj}, {"a", map[string]any{"k": []any{1}}}, nil, nil, {"x"}}
	for i, w := range want {
		if !reflect.DeepEqual(p.Fields[i].Value, w) {
			t.Errorf("field %d: %#v, want %#v", i, p.Fields[i].Value, w)
		}
	}
	if !p.Fields[5].Secret || p.Fields[5].Label != "hidden" || p.Fields[0].Type != "login" {
		t.Errorf("field metadata lost: %+v", p.Fields)
	}
	p.Fields[1].Value[0].(map[string]any)["hostName"] = "changed"
	if obj["hostName"] != "h" {
		t.Error("PayloadRecord shares values with the inventory")
	}
}

func TestProblemOrderAndFormat(t *testing.T) {
	t.Parallel()
	ps := []Problem{
		{Path: "records[10].uid", Message: "m"},
		{Path: "records[2].scripts[10].file", Message: "m"},
		{Path: "records[2].scripts[9].file", Message: "m"},
		{Path: "records", Message: "m"},
		{Path: "", Message: "line 3: bad"},
		{Path: "records[2].scripts[9].file", Message: "second", Line: 4},
	}
	sortProblems(ps)
	want := []string{"", "records", "records[2].scripts[9].file", "records[2].scripts[9].file", "records[2].scripts[10].file", "records[10].uid"}
	if got := paths(&ValidationError{Problems: ps}); !reflect.DeepEqual(got, want) {
		t.Fatalf("order = %q, want %q", got, want)
	}
	if ps[3].Message != "second" {
		t.Error("problems with the same path lost their order")
	}
	e := &ValidationError{Problems: []Problem{{Path: "records[1].uid", Message: "bad", Line: 3}, {Message: "line 2: x"}}}
	if e.Error() != "records[1].uid: bad (line 3)\nline 2: x" {
		t.Fatalf("Error() = %q", e.Error())
	}
	if !e.HasPath("records[1].uid") || e.HasPath("records[2]") {
		t.Error("HasPath")
	}
	if !errors.Is(e, ErrInvalidInventory) {
		t.Error("errors.Is(ErrInvalidInventory)")
	}
}

func TestLoadMissingFile(t *testing.T) {
	t.Parallel()
	_, err := Load(filepath.Join(t.TempDir(), "nope.yaml"))
	if !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Load(missing) = %v, want ErrNotExist", err)
	}
}
