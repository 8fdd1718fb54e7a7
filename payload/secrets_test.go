package payload

import (
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"html"
	"net/url"
	"os/exec"
	"reflect"
	"slices"
	"strings"
	"testing"
)

func TestRecordSecrets(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		fields []Field
		want   []string
	}{
		{name: "no fields", want: nil},
		{
			name: "secret field types",
			fields: []Field{
				{Type: "login", Value: []any{"bob"}},
				{Type: "password", Value: []any{"pw"}},
				{Type: "secret", Label: "api key", Value: []any{"sk"}},
				{Type: "pinCode", Value: []any{"1234"}},
				{Type: "privateKey", Value: []any{"-----BEGIN-----"}},
				{Type: "url", Value: []any{"https://x"}},
				{Type: "host", Value: []any{map[string]any{"hostName": "h", "port": "22"}}},
			},
			want: []string{"pw", "sk", "1234", "-----BEGIN-----"},
		},
		{
			name: "one-time codes and their seed",
			fields: []Field{
				{Type: "oneTimeCode", Value: []any{"otpauth://totp/x?secret=JBSWY3DPEHPK3PXP&issuer=K"}},
				{Type: "otp", Value: []any{"not a uri"}},
			},
			want: []string{"otpauth://totp/x?secret=JBSWY3DPEHPK3PXP&issuer=K", "JBSWY3DPEHPK3PXP", "not a uri"},
		},
		{
			name: "keyPair gives only its private key",
			fields: []Field{
				{Type: "keyPair", Value: []any{map[string]any{"publicKey": "pub", "privateKey": "priv"}}},
				{Type: "keyPair", Value: []any{map[string]string{"publicKey": "pub2", "privateKey": "priv2"}}},
			},
			want: []string{"priv", "priv2"},
		},
		{
			name: "Secret flag and nested strings",
			fields: []Field{
				{Type: "text", Secret: true, Value: []any{"t1", map[string]any{"b": "t3", "a": []any{"t2", 7.0}}}},
				{Type: "text", Value: []any{"not secret"}},
			},
			want: []string{"t1", "t2", "t3"},
		},
		{
			name: "duplicates and empties dropped",
			fields: []Field{
				{Type: "password", Value: []any{"same", ""}},
				{Type: "password", Label: "other", Value: []any{"same"}},
				{Type: "password"},
				{Type: "password", Value: []any{nil, true}},
			},
			want: []string{"same"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := Record{UID: "u", Fields: tt.fields}.Secrets()
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Secrets() = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestInputSecrets(t *testing.T) {
	t.Parallel()
	in := setup(t)
	in.Configuration.Fields = []Field{{Type: "secret", Value: []any{"cfgsecret"}}}
	in.OldPassword = ""
	got := in.Secrets()
	want := []string{testSecret, "cfgsecret", "tok"} // the user's password is the new password
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Secrets() = %q, want %q", got, want)
	}
}

func TestParamsSecrets(t *testing.T) {
	t.Parallel()
	p, err := Build(setup(t))
	if err != nil {
		t.Fatal(err)
	}
	line, err := p.Encode()
	if err != nil {
		t.Fatal(err)
	}
	want := []string{testSecret, "old", p.Records, strings.TrimSuffix(string(line), "\n")}
	if got := p.Secrets(); !reflect.DeepEqual(got, want) {
		t.Errorf("Secrets() = %q, want %q", got, want)
	}
}

func TestSecretVariants(t *testing.T) {
	t.Parallel()
	const s = `p<a>s&s"w\o/r+d ü😀` + "\u2028"
	tests := []struct {
		name string
		in   []string
		want []string // must all be present
		not  []string // must all be absent
	}{
		{name: "none", in: nil},
		{name: "only empties", in: []string{"", ""}},
		{
			name: "every form",
			in:   []string{s},
			want: []string{
				s,
				base64.StdEncoding.EncodeToString([]byte(s)),
				base64.RawStdEncoding.EncodeToString([]byte(s)),
				base64.URLEncoding.EncodeToString([]byte(s)),
				base64.RawURLEncoding.EncodeToString([]byte(s)),
				`p\u003ca\u003es\u0026s\"w\\o/r+d ü😀\u2028`,  // Go, HTML-escaped
				`p<a>s&s\"w\\o/r+d ü😀\u2028`,                 // Go
				`p<a>s&s\"w\\o/r+d \u00fc\ud83d\ude00\u2028`, // Python json.dumps
				`p<a>s&s\"w\\o/r+d ü😀` + "\u2028",            // Python, ensure_ascii=False
				url.QueryEscape(s),                           // p%3Ca%3Es%26...
				url.PathEscape(s),
				`p%3ca%3es%26s%22w%5co%2fr%2bd+%c3%bc%f0%9f%98%80%e2%80%a8`,                   // lower-case hex
				`p%3Ca%3Es%26s%22w%5Co%2Fr%2Bd%20%C3%BC%F0%9F%98%80%E2%80%A8`,                 // encodeURIComponent, quote(safe="")
				`p%3Ca%3Es&s%22w%5Co/r+d%20%C3%BC%F0%9F%98%80%E2%80%A8`,                       // encodeURI
				`p%3Ca%3Es%26s%22w%5Co/r%2Bd%20%C3%BC%F0%9F%98%80%E2%80%A8`,                   // quote
				`%70%3C%61%3E%73%26%73%22%77%5C%6F%2F%72%2B%64%20%C3%BC%F0%9F%98%80%E2%80%A8`, // every byte
				`%70%3c%61%3e%73%26%73%22%77%5c%6f%2f%72%2b%64%20%c3%bc%f0%9f%98%80%e2%80%a8`, // every byte, lower-case hex
				html.EscapeString(s),                                                          // p&lt;a&gt;s&amp;s&#34;w\o/r+d ü😀
				`p&lt;a&gt;s&amp;s&quot;w\o/r+d ü😀` + "\u2028",                                // Python's html.escape
				`p&lt;a&gt;s&amp;s&#34;w\o/r&#43;d ü😀` + "\u2028",                             // Go's html/template
				strings.ToUpper(s),
				hex.EncodeToString([]byte(s)),
				strings.ToUpper(hex.EncodeToString([]byte(s))),
			},
		},
		{
			name: "short secrets: no case or hex forms",
			in:   []string{"a", "pw1"},
			want: []string{"a", "pw1", "%61", "%70%77%31"},
			not:  []string{"A", "61", "PW1", "707731"},
		},
		{
			name: "4 bytes: case and hex forms",
			in:   []string{"pw12"},
			want: []string{"PW12", "70773132"},
		},
		{name: "duplicates collapse", in: []string{"abc", "abc"}, want: []string{"abc", "YWJj"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := SecretVariants(tt.in...)
			for _, w := range tt.want {
				if !slices.Contains(got, w) {
					t.Errorf("missing variant %q", w)
				}
			}
			for _, n := range tt.not {
				if slices.Contains(got, n) {
					t.Errorf("unexpected variant %q", n)
				}
			}
			seen := map[string]bool{}
			for i, v := range got {
				if v == "" {
					t.Error("empty variant")
				}
				if seen[v] {
					t.Errorf("duplicate variant %q", v)
				}
				seen[v] = true
				if i > 0 && len(got[i-1]) < len(v) {
					t.Errorf("not longest first: %q before %q", got[i-1], v)
				}
			}
			if len(tt.in) == 0 || tt.in[0] == "" {
				if len(got) != 0 {
					t.Errorf("got %q for no secrets", got)
				}
			}
		})
	}
}

// TestSecretVariantsEmbeddedBase64 checks that a secret sitting anywhere
// inside a longer base64 text is still caught, raw or JSON-escaped: that is
// how it sits in the stdin line and in records.
func TestSecretVariantsEmbeddedBase64(t *testing.T) {
	t.Parallel()
	for _, secret := range []string{`hunter22`, `p<a>s&s"w\ü😀rd`, "abcdefghijk"} {
		variants := SecretVariants(secret)
		for _, form := range []string{secret, jsonEscape(secret, false)} {
			for prefix := range 6 {
				for suffix := range 4 {
					text := strings.Repeat("x", prefix) + form + strings.Repeat("y", suffix)
					for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding} {
						b := enc.EncodeToString([]byte(text))
						if !slices.ContainsFunc(variants, func(v string) bool { return strings.Contains(b, v) }) {
							t.Errorf("%q at offset %d in %q: no variant found in its base64 %q", secret, prefix, text, b)
						}
					}
				}
			}
		}
	}
}

// TestSecretVariantsPython checks the Python forms against Python itself.
func TestSecretVariantsPython(t *testing.T) {
	t.Parallel()
	const python = "/usr/bin/python3"
	if _, err := exec.LookPath(python); err != nil {
		t.Skip("/usr/bin/python3 not found: install python3")
	}
	secrets := []string{`p<a>s&s"w\o/r+d ü😀` + "\u2028\x01\x7f\b\f\t\r\n", "plain"}
	in, _ := json.Marshal(secrets)
	cmd := exec.Command(python, "-c", `import json,sys
for s in json.load(sys.stdin):
    print(json.dumps(json.dumps(s)[1:-1]), json.dumps(json.dumps(s, ensure_ascii=False)[1:-1]))`)
	cmd.Stdin = strings.NewReader(string(in))
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	for i, s := range secrets {
		var ascii, unicode string
		dec := json.NewDecoder(strings.NewReader(lines[i]))
		if err := dec.Decode(&ascii); err != nil {
			t.Fatal(err)
		}
		if err := dec.Decode(&unicode); err != nil {
			t.Fatal(err)
		}
		if got := pythonJSONEscape(s, true); got != ascii {
			t.Errorf("ensure_ascii=True: got %q, Python wrote %q", got, ascii)
		}
		if got := pythonJSONEscape(s, false); got != unicode {
			t.Errorf("ensure_ascii=False: got %q, Python wrote %q", got, unicode)
		}
	}
}
