package payload

import (
	"encoding/json"
	"errors"
	"reflect"
	"testing"
)

func TestRecordDict(t *testing.T) {
	t.Parallel()
	host := map[string]any{"hostName": "h", "port": "22"}
	tests := []struct {
		name   string
		fields []Field
		want   string // the dictionary's JSON, exactly
	}{
		{
			name: "no fields",
			want: `{"uid":"U1","title":"T <&>"}`,
		},
		{
			name:   "label wins over type",
			fields: []Field{{Type: "text", Label: "region", Value: []any{"eu"}}},
			want:   `{"uid":"U1","title":"T <&>","region":"eu"}`,
		},
		{
			name:   "type when no label",
			fields: []Field{{Type: "login", Value: []any{"bob"}}},
			want:   `{"uid":"U1","title":"T <&>","login":"bob"}`,
		},
		{
			name:   "host object stays an object",
			fields: []Field{{Type: "pamHostname", Value: []any{host}}},
			want:   `{"uid":"U1","title":"T <&>","pamHostname":{"hostName":"h","port":"22"}}`,
		},
		{
			name:   "several values give an array",
			fields: []Field{{Type: "url", Value: []any{"a", "b", 3, true, nil}}},
			want:   `{"uid":"U1","title":"T <&>","url":["a","b",3,true,null]}`,
		},
		{
			name:   "one array value stays that array",
			fields: []Field{{Type: "multi", Value: []any{[]any{"a"}}}},
			want:   `{"uid":"U1","title":"T <&>","multi":["a"]}`,
		},
		{
			name:   "no value gives null",
			fields: []Field{{Type: "password"}, {Type: "otp", Value: []any{}}},
			want:   `{"uid":"U1","title":"T <&>","password":null,"otp":null}`,
		},
		{
			name: "duplicates get the first free suffix",
			fields: []Field{
				{Type: "text", Label: "title", Value: []any{"1"}},
				{Type: "text", Label: "uid", Value: []any{"2"}},
				{Type: "password", Value: []any{"3"}},
				{Type: "password", Value: []any{"4"}},
				{Type: "text", Label: "password_3", Value: []any{"5"}},
				{Type: "password", Value: []any{"6"}},
				{Type: "text", Label: "title", Value: []any{"7"}},
				{Type: "text", Label: "title_2", Value: []any{"8"}},
			},
			want: `{"uid":"U1","title":"T <&>","title_2":"1","uid_2":"2","password":"3","password_2":"4","password_3":"5","password_4":"6","title_3":"7","title_2_2":"8"}`,
		},
		{
			name:   "no HTML escaping, unicode kept",
			fields: []Field{{Type: "password", Value: []any{"<a>&\"\\ü😀\u2028"}}},
			want:   `{"uid":"U1","title":"T <&>","password":"<a>&\"\\ü😀\u2028"}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := Record{UID: "U1", Type: "login", Title: "T <&>", Fields: tt.fields}
			got, err := r.Dict().MarshalJSON()
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.want {
				t.Errorf("got  %s\nwant %s", got, tt.want)
			}
			// Reading it back keeps the order and the values.
			var d Dict
			if err := json.Unmarshal(got, &d); err != nil {
				t.Fatal(err)
			}
			again, err := d.MarshalJSON()
			if err != nil {
				t.Fatal(err)
			}
			if string(again) != tt.want {
				t.Errorf("after a round trip: %s", again)
			}
		})
	}
}

func TestDictAccessors(t *testing.T) {
	t.Parallel()
	d := Record{UID: "U", Title: "T", Fields: []Field{
		{Type: "login", Value: []any{"bob"}},
		{Type: "port", Value: []any{22}},
		{Type: "empty"},
	}}.Dict()
	if got, want := d.Keys(), []string{"uid", "title", "login", "port", "empty"}; !reflect.DeepEqual(got, want) {
		t.Errorf("Keys() = %q, want %q", got, want)
	}
	d.Keys()[0] = "changed"
	if d.Keys()[0] != "uid" {
		t.Error("Keys() does not return a copy")
	}
	if d.Len() != 5 {
		t.Errorf("Len() = %d", d.Len())
	}
	if v, ok := d.Get("empty"); !ok || v != nil {
		t.Errorf(`Get("empty") = %v, %v; want nil, true`, v, ok)
	}
	if _, ok := d.Get("missing"); ok {
		t.Error(`Get("missing") reports present`)
	}
	if got := d.String("login"); got != "bob" {
		t.Errorf(`String("login") = %q`, got)
	}
	if got := d.String("port"); got != "" {
		t.Errorf(`String("port") = %q, want "" for a number`, got)
	}
	d.Set("login", "alice")
	d.Set("new", 1)
	if got, want := d.Keys(), []string{"uid", "title", "login", "port", "empty", "new"}; !reflect.DeepEqual(got, want) {
		t.Errorf("after Set, Keys() = %q, want %q", got, want)
	}
	if d.String("login") != "alice" {
		t.Error("Set did not replace the value")
	}

	var nilDict *Dict
	if nilDict.Keys() != nil || nilDict.Len() != 0 || nilDict.String("x") != "" {
		t.Error("a nil *Dict does not read as empty")
	}
	if _, ok := nilDict.Get("x"); ok {
		t.Error("a nil *Dict has a key")
	}
	var zero Dict
	if b, err := json.Marshal(zero); err != nil || string(b) != "{}" {
		t.Errorf("zero Dict marshals to %s, %v", b, err)
	}
}

func TestDictUnmarshalJSON(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		in       string
		wantKeys []string
		wantErr  bool
	}{
		{name: "document order", in: `{"z":1,"a":{"y":2,"b":3},"m":[1,"x"]}`, wantKeys: []string{"z", "a", "m"}},
		{name: "empty", in: ` { } `, wantKeys: nil},
		{name: "null leaves it unchanged", in: `null`, wantKeys: []string{"keep"}},
		{name: "duplicate key", in: `{"a":1,"a":2}`, wantErr: true},
		{name: "array", in: `[1]`, wantErr: true},
		{name: "string", in: `"s"`, wantErr: true},
		{name: "truncated", in: `{"a":`, wantErr: true},
		{name: "trailing data", in: `{} {}`, wantErr: true},
		{name: "invalid UTF-8", in: "{\"a\":\"\xff\"}", wantErr: true},
		{name: "syntax", in: `{"a":secret}`, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			d := &Dict{}
			d.Set("keep", true)
			err := d.UnmarshalJSON([]byte(tt.in))
			if tt.wantErr {
				if !errors.Is(err, ErrMalformed) {
					t.Fatalf("err = %v, want ErrMalformed", err)
				}
				assertNoLeak(t, err, "secret", "\xff")
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(d.Keys(), tt.wantKeys) {
				t.Errorf("Keys() = %q, want %q", d.Keys(), tt.wantKeys)
			}
		})
	}
}
