package payload

import (
	"encoding/base64"
	"errors"
	"math"
	"reflect"
	"strings"
	"testing"
)

const testSecret = "S3cr3t<&>\"\\ü"

// setup returns a valid Input: a configuration, a resource, one additional
// record and a user, with testSecret as the new password.
func setup(t *testing.T) Input {
	t.Helper()
	return Input{
		Configuration: &Record{UID: "cfg", Type: "pamNetworkConfiguration", Title: "net"},
		Resource: &Record{UID: "res", Type: "pamMachine", Title: "m1", Fields: []Field{
			{Type: "pamHostname", Value: []any{map[string]any{"hostName": "h", "port": "22"}}},
		}},
		Additional: []Record{{UID: "add", Type: "login", Title: "token", Fields: []Field{
			{Type: "password", Value: []any{"tok"}},
		}}},
		User: Record{UID: "usr", Type: "pamUser", Title: "u", Fields: []Field{
			{Type: "login", Value: []any{"bob"}},
			{Type: "password", Value: []any{testSecret}},
		}},
		NewPassword: testSecret,
		OldPassword: "old",
	}
}

func TestBuild(t *testing.T) {
	t.Parallel()
	in := setup(t)
	p, err := Build(in)
	if err != nil {
		t.Fatal(err)
	}
	want := Params{
		ProviderRecordUID: "cfg",
		ResourceRecordUID: "res",
		UserRecordUID:     "usr",
		NewPassword:       testSecret,
		OldPassword:       "old",
		User:              "bob",
	}
	got := p
	got.Records = ""
	if got != want {
		t.Errorf("Build() = %+v, want %+v", got, want)
	}
	recs, err := base64.StdEncoding.DecodeString(p.Records)
	if err != nil {
		t.Fatal(err)
	}
	wantRecs := `[{"uid":"cfg","title":"net"},` +
		`{"uid":"res","title":"m1","pamHostname":{"hostName":"h","port":"22"}},` +
		`{"uid":"add","title":"token","password":"tok"},` +
		`{"uid":"usr","title":"u","login":"bob","password":"S3cr3t<&>\"\\ü"}]`
	if string(recs) != wantRecs {
		t.Errorf("records = %s\nwant      %s", recs, wantRecs)
	}
}

func TestBuildLogin(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		login  string
		fields []Field
		want   string
	}{
		{name: "explicit login wins", login: "explicit", fields: []Field{{Type: "login", Value: []any{"field"}}}, want: "explicit"},
		{name: "first login field", fields: []Field{{Type: "text", Value: []any{"x"}}, {Type: "login", Value: []any{"first"}}, {Type: "login", Value: []any{"second"}}}, want: "first"},
		{name: "labelled login field", fields: []Field{{Type: "login", Label: "Username", Value: []any{"lab"}}}, want: "lab"},
		{name: "empty login field", fields: []Field{{Type: "login"}, {Type: "login", Value: []any{"second"}}}, want: ""},
		{name: "no login field", fields: []Field{{Type: "text", Value: []any{"x"}}}, want: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p, err := Build(Input{User: Record{UID: "u", Fields: tt.fields}, NewPassword: "n", Login: tt.login})
			if err != nil {
				t.Fatal(err)
			}
			if p.User != tt.want {
				t.Errorf("user = %q, want %q", p.User, tt.want)
			}
			if p.ProviderRecordUID != "" || p.ResourceRecordUID != "" {
				t.Errorf("uids of absent records = %q, %q; want empty", p.ProviderRecordUID, p.ResourceRecordUID)
			}
		})
	}
}

func TestBuildErrors(t *testing.T) {
	t.Parallel()
	cyclic := []any{nil}
	cyclic[0] = cyclic
	tests := []struct {
		name   string
		modify func(*Input)
		where  string // must appear in the error
	}{
		{name: "user without uid", modify: func(in *Input) { in.User.UID = "" }, where: "user: missing uid"},
		{name: "configuration without uid", modify: func(in *Input) { in.Configuration.UID = "" }, where: "configuration: missing uid"},
		{name: "resource without uid", modify: func(in *Input) { in.Resource.UID = "" }, where: "resource: missing uid"},
		{name: "additional without uid", modify: func(in *Input) { in.Additional = append(in.Additional, Record{}) }, where: "additional[1]: missing uid"},
		{name: "field without label or type", modify: func(in *Input) { in.User.Fields = append(in.User.Fields, Field{Value: []any{testSecret}}) }, where: `user (uid "usr"): fields[2]`},
		{name: "unsupported value type", modify: func(in *Input) { in.Resource.Fields[0].Value = []any{struct{ S string }{testSecret}} }, where: `resource (uid "res"): fields[0] (pamHostname): value[0]: unsupported type`},
		{name: "NaN", modify: func(in *Input) { in.User.Fields[1].Value = []any{math.NaN()} }, where: "value[0]: number is not finite"},
		{name: "invalid UTF-8 in a secret", modify: func(in *Input) { in.User.Fields[1].Value = []any{testSecret + "\xff"} }, where: "fields[1] (password): value[0]: string is not valid UTF-8"},
		{name: "invalid UTF-8 in a map", modify: func(in *Input) {
			in.Resource.Fields[0].Value = []any{map[string]any{"k": []any{testSecret + "\xff"}}}
		}, where: "not valid UTF-8"},
		{name: "cyclic value", modify: func(in *Input) { in.User.Fields[1].Value = []any{cyclic} }, where: "nested more than"},
		{name: "empty new password", modify: func(in *Input) { in.NewPassword = "" }, where: "newPassword is empty"},
		{name: "invalid UTF-8 new password", modify: func(in *Input) { in.NewPassword = testSecret + "\xff" }, where: "newPassword is not valid UTF-8"},
		{name: "invalid UTF-8 old password", modify: func(in *Input) { in.OldPassword = testSecret + "\xff" }, where: "oldPassword is not valid UTF-8"},
		{name: "invalid UTF-8 title", modify: func(in *Input) { in.User.Title = "\xff" }, where: "title is not valid UTF-8"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			in := setup(t)
			tt.modify(&in)
			_, err := Build(in)
			if !errors.Is(err, ErrInvalidInput) {
				t.Fatalf("err = %v, want ErrInvalidInput", err)
			}
			if !strings.Contains(err.Error(), tt.where) {
				t.Errorf("error %q does not say %q", err, tt.where)
			}
			assertNoLeak(t, err, testSecret, "S3cr3t")
		})
	}
}

func TestBuildAcceptsValueTypes(t *testing.T) {
	t.Parallel()
	in := Input{NewPassword: "n", User: Record{UID: "u", Fields: []Field{{Type: "x", Value: []any{
		int8(1), uint64(2), float32(1.5), "s", true, nil,
		[]string{"a"}, map[string]string{"k": "v"}, map[string]any{"n": []any{1.25}},
	}}}}}
	p, err := Build(in)
	if err != nil {
		t.Fatal(err)
	}
	recs, _ := base64.StdEncoding.DecodeString(p.Records)
	want := `[{"uid":"u","title":"","x":[1,2,1.5,"s",true,null,["a"],{"k":"v"},{"n":[1.25]}]}]`
	if string(recs) != want {
		t.Errorf("records = %s, want %s", recs, want)
	}
}

func TestEncode(t *testing.T) {
	t.Parallel()
	p, err := Build(setup(t))
	if err != nil {
		t.Fatal(err)
	}
	line, err := p.Encode()
	if err != nil {
		t.Fatal(err)
	}
	js, err := base64.StdEncoding.DecodeString(strings.TrimSuffix(string(line), "\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := `{"providerRecordUid":"cfg","resourceRecordUid":"res","userRecordUid":"usr",` +
		`"newPassword":"S3cr3t<&>\"\\ü","oldPassword":"old","user":"bob","records":"` + p.Records + `"}`
	if string(js) != want {
		t.Errorf("JSON = %s\nwant   %s", js, want)
	}

	bad := []struct {
		name   string
		modify func(*Params)
	}{
		{"invalid UTF-8 password", func(p *Params) { p.NewPassword = testSecret + "\xff" }},
		{"records not base64", func(p *Params) { p.Records = testSecret }},
		{"records empty", func(p *Params) { p.Records = "" }},
	}
	for _, tt := range bad {
		q := p
		tt.modify(&q)
		_, err := q.Encode()
		if !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: err = %v, want ErrMalformed", tt.name, err)
		}
		assertNoLeak(t, err, testSecret)
	}
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

func TestDecodeLineEndings(t *testing.T) {
	t.Parallel()
	p, err := Build(setup(t))
	if err != nil {
		t.Fatal(err)
	}
	line, err := p.Encode()
	if err != nil {
		t.Fatal(err)
	}
	bare := strings.TrimSuffix(string(line), "\n")
	for _, in := range []string{bare, bare + "\n", bare + "\r\n"} {
		got, err := Decode([]byte(in))
		if err != nil {
			t.Errorf("Decode(%q...): %v", in[:8], err)
			continue
		}
		if got != p {
			t.Errorf("Decode = %+v, want %+v", got, p)
		}
	}
}

func TestDecodeMalformed(t *testing.T) {
	t.Parallel()
	goodRecords := b64(`[{"uid":"u","title":"t"}]`)
	esc := jsonEscape(testSecret, false)
	obj := func(records string) string {
		return `{"providerRecordUid":"","resourceRecordUid":"","userRecordUid":"u","newPassword":"` +
			esc + `","oldPassword":"","user":"","records":"` + records + `"}`
	}
	good := b64(obj(goodRecords))
	if _, err := Decode([]byte(good + "\n")); err != nil {
		t.Fatalf("the base case does not decode: %v", err)
	}
	tests := []struct {
		name  string
		line  string
		where string // must appear in the error
	}{
		{"empty", "", "empty"},
		{"only a newline", "\n", "empty"},
		{"two newlines", good + "\n\n", "line break at byte"},
		{"a second line", good + "\n" + good + "\n", "line break at byte"},
		{"wrapped", good[:76] + "\n" + good[76:] + "\n", "line break at byte 76"},
		{"lone CR", good + "\r", "line break"},
		{"leading space", " " + good, "byte 0 is not in the standard base64 alphabet"},
		{"URL alphabet", strings.NewReplacer("+", "-", "/", "_").Replace(b64(obj(goodRecords) + "\xfb\xff")), "not in the standard base64 alphabet"},
		{"unpadded", strings.TrimRight(b64(obj(goodRecords)+"x"), "="), "not a multiple of 4"},
		{"padding inside", "QQ==QQ==", "invalid base64"},
		{"non-zero padding bits", "QR==", "invalid base64"},
		{"not JSON", b64(testSecret), "invalid JSON at byte"},
		{"invalid UTF-8", b64(`{"newPassword":"` + esc + "\xff" + `"}`), "not valid UTF-8"},
		{"array", b64(`["` + esc + `"]`), "not a JSON object"},
		{"trailing data", b64(obj(goodRecords) + ` {}`), "data after the JSON value"},
		{"missing key", b64(`{"newPassword":"` + esc + `"}`), `missing key "providerRecordUid"`},
		{"unknown key", b64(`{"` + esc + `":""}`), "key 0 is not a known key"},
		{"duplicate key", b64(strings.Replace(obj(goodRecords), `"user":""`, `"user":"","user":"x"`, 1)), `duplicate key "user"`},
		{"null value", b64(strings.Replace(obj(goodRecords), `"user":""`, `"user":null`, 1)), `"user" is null, not a string`},
		{"number value", b64(strings.Replace(obj(goodRecords), `"user":""`, `"user":12345`, 1)), `"user" is a number, not a string`},
		{"object value", b64(strings.Replace(obj(goodRecords), `"user":""`, `"user":{"a":"`+esc+`"}`, 1)), `"user" is an object, not a string`},
		{"truncated JSON", b64(obj(goodRecords)[:40]), "unexpected end of JSON"},
		{"records not base64", b64(obj(esc)), "records: byte 6 is not in the standard base64 alphabet"},
		{"records wrapped", b64(obj(goodRecords[:4] + `\n` + goodRecords[4:])), "records: line break at byte 4"},
		{"records not an array", b64(obj(b64(`{"uid":"u","title":"t"}`))), "records: not a JSON array"},
		{"record not an object", b64(obj(b64(`[{"uid":"u","title":"t"},"` + esc + `"]`))), "records[1]: not a JSON object"},
		{"record without uid", b64(obj(b64(`[{"title":"t"}]`))), `records[0]: missing key "uid"`},
		{"record with empty uid", b64(obj(b64(`[{"uid":"","title":"t"}]`))), `records[0]: uid is empty`},
		{"record with numeric title", b64(obj(b64(`[{"uid":"u","title":1}]`))), `records[0]: "title" is a number, not a string`},
		{"record with duplicate key", b64(obj(b64(`[{"uid":"u","title":"t","p":"` + esc + `","p":"x"}]`))), `records[0]: key 3 is a duplicate`},
		{"record with bad JSON", b64(obj(b64(`[{"uid":"u","title":"t","p":` + testSecret + `}]`))), `records[0]: invalid JSON`},
		{"records trailing data", b64(obj(b64(`[{"uid":"u","title":"t"}] x`))), `records: `},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p, err := Decode([]byte(tt.line))
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("err = %v, want ErrMalformed", err)
			}
			if p != (Params{}) {
				t.Errorf("Decode returned %+v with an error", p)
			}
			if !strings.Contains(err.Error(), tt.where) {
				t.Errorf("error %q does not say %q", err, tt.where)
			}
			assertNoLeak(t, err, testSecret, "S3cr3t", "12345")
		})
	}
}

func TestRecordDicts(t *testing.T) {
	t.Parallel()
	in := setup(t)
	p, err := Build(in)
	if err != nil {
		t.Fatal(err)
	}
	dicts, err := p.RecordDicts()
	if err != nil {
		t.Fatal(err)
	}
	if len(dicts) != 4 {
		t.Fatalf("got %d dicts, want 4", len(dicts))
	}
	wantTitles := []string{"net", "m1", "token", "u"}
	for i, d := range dicts {
		if d.String("title") != wantTitles[i] {
			t.Errorf("records[%d].title = %q, want %q", i, d.String("title"), wantTitles[i])
		}
	}
	host, _ := dicts[1].Get("pamHostname")
	if !reflect.DeepEqual(host, map[string]any{"hostName": "h", "port": "22"}) {
		t.Errorf("host = %#v", host)
	}
	if dicts[3].String("password") != testSecret {
		t.Error("the user's password does not survive")
	}

	empty, err := Params{Records: b64(`[]`)}.RecordDicts()
	if err != nil || len(empty) != 0 {
		t.Errorf("empty array: %v, %v", empty, err)
	}
}
