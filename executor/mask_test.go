package executor_test

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"html"
	htmltemplate "html/template"
	"math/rand/v2"
	"net/url"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	texttemplate "text/template"
	"unicode/utf8"

	"github.com/postrotate/postrotate/executor"
	"github.com/postrotate/postrotate/payload"
)

func TestMask(t *testing.T) {
	t.Parallel()
	const secret = `p@ss w/rd+"<x>"`
	m := executor.NewMasker(secret, "", "tok3n")
	for _, tc := range []struct {
		name, in, want string
	}{
		{"NoSecret", "nothing to see", "nothing to see"},
		{"Empty", "", ""},
		{"Raw", "pw=" + secret + ".", "pw=********."},
		{"Base64", "b=" + base64.StdEncoding.EncodeToString([]byte(secret)), "b=********"},
		{"Base64URLRaw", base64.RawURLEncoding.EncodeToString([]byte(secret)), "********"},
		{"URLQuery", "?p=" + url.QueryEscape(secret) + "&", "?p=********&"},
		{"URLPath", "/" + url.PathEscape(secret) + "/", "/********/"},
		{"JSON", `{"p":"p@ss w/rd+\"\u003cx\u003e\""}`, `{"p":"********"}`},
		{"JSONNoHTMLEscape", `{"p":"p@ss w/rd+\"<x>\""}`, `{"p":"********"}`},
		{"Twice", "tok3n tok3n", "******** ********"},
		{"AdjacentMerged", "tok3ntok3n!", "********!"},
		{"OverlappingMerged", "tok3n" + secret, "********"},
		{"Multiline", "a\ntok3n\nb", "a\n********\nb"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := m.Mask(tc.in); got != tc.want {
				t.Errorf("Mask(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

func TestMaskOverlappingOccurrences(t *testing.T) {
	t.Parallel()
	// "aXa" occurs at 0 and 2 of "aXaXa": both, overlapping, are hidden.
	if got := executor.NewMasker("aXa").Mask("<aXaXa>"); got != "<********>" {
		t.Errorf("got %q", got)
	}
}

func TestNilAndEmptyMasker(t *testing.T) {
	t.Parallel()
	var nilMasker *executor.Masker
	for _, m := range []*executor.Masker{nilMasker, executor.NewMasker(), executor.NewMasker("")} {
		if got := m.Mask("text"); got != "text" {
			t.Errorf("Mask = %q", got)
		}
		if h, tl := m.MaskCut("he", "ad"); h != "he" || tl != "ad" {
			t.Errorf("MaskCut = %q, %q", h, tl)
		}
	}
}

func TestMaskCut(t *testing.T) {
	t.Parallel()
	m := executor.NewMasker("SECRETVALUE")
	for _, tc := range []struct {
		name, head, tail, wantHead, wantTail string
	}{
		{"Straddling", "abc SECRE", "TVALUE xyz", "abc ********", "******** xyz"},
		{"WholeInHead", "x SECRETVALUE", "tail", "x ********", "tail"},
		{"Unrelated", "head.", ".tail", "head.", ".tail"},
		{"OneByteEachSide", "aS", "Eb", "a********", "********b"},
		{"AfterMask", "SECRETVALUE SEC", "x", "******** ********", "x"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h, tl := m.MaskCut(tc.head, tc.tail)
			if h != tc.wantHead || tl != tc.wantTail {
				t.Errorf("MaskCut(%q, %q) = %q, %q; want %q, %q", tc.head, tc.tail, h, tl, tc.wantHead, tc.wantTail)
			}
		})
	}
}

func TestJobMaskerMasksStdinLine(t *testing.T) {
	t.Parallel()
	job := executor.Job{Stdin: []byte("eyJuZXdQYXNzd29yZCI6Ing5In0=\n"), Secrets: []string{"x9"}}
	got := job.Masker().Mask("line eyJuZXdQYXNzd29yZCI6Ing5In0= pw x9")
	if want := "line ******** pw ********"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

// encoders are the ways a script may print a secret, as the real
// implementations write them: Go's own, and reference implementations of
// other languages' encoders from their documented sets of unreserved
// characters (TestEncodersMatchOtherLanguages checks these against node,
// python3 and java).
var encoders = []struct {
	name string
	enc  func(string) string
	// loose forms are masked only for secrets of at least 4 bytes (see
	// payload.SecretVariants).
	loose bool
	// utf8 encoders are defined on valid UTF-8 only: JavaScript's work on
	// UTF-16 strings, Java's URLEncoder on Java strings.
	utf8 bool
}{
	{name: "Raw", enc: func(s string) string { return s }},
	{name: "Base64Std", enc: b64(base64.StdEncoding)},
	{name: "Base64URL", enc: b64(base64.URLEncoding)},
	{name: "Base64RawStd", enc: b64(base64.RawStdEncoding)},
	{name: "Base64RawURL", enc: b64(base64.RawURLEncoding)},
	{name: "JSON", enc: func(s string) string { return jsonString(s, true) }},
	{name: "JSONNoHTMLEscape", enc: func(s string) string { return jsonString(s, false) }},
	{name: "GoQueryEscape", enc: url.QueryEscape},
	{name: "GoQueryEscapeLowerHex", enc: lowerHex(url.QueryEscape)},
	{name: "GoPathEscape", enc: url.PathEscape},
	{name: "GoPathEscapeLowerHex", enc: lowerHex(url.PathEscape)},
	{name: "JSEncodeURIComponent", enc: encodeURIComponent, utf8: true},
	{name: "JSEncodeURIComponentLowerHex", enc: lowerHex(encodeURIComponent), utf8: true},
	{name: "JSEncodeURI", enc: encodeURI, utf8: true},
	{name: "JSEncodeURILowerHex", enc: lowerHex(encodeURI), utf8: true},
	{name: "PythonQuoteSafeEmpty", enc: func(s string) string { return pyQuote(s, "") }},
	{name: "PythonQuoteSafeEmptyLowerHex", enc: lowerHex(func(s string) string { return pyQuote(s, "") })},
	{name: "PythonQuote", enc: func(s string) string { return pyQuote(s, "/") }},
	{name: "PythonQuoteLowerHex", enc: lowerHex(func(s string) string { return pyQuote(s, "/") })},
	{name: "PythonQuotePlus", enc: pyQuotePlus},
	{name: "PythonQuotePlusLowerHex", enc: lowerHex(pyQuotePlus)},
	{name: "JavaURLEncoder", enc: javaURLEncode, utf8: true},
	{name: "JavaURLEncoderLowerHex", enc: lowerHex(javaURLEncode), utf8: true},
	{name: "PHPURLEncode", enc: phpURLEncode},
	{name: "PHPURLEncodeLowerHex", enc: lowerHex(phpURLEncode)},
	{name: "DotNetURLEncode", enc: dotnetURLEncode},
	{name: "DotNetURLEncodeLowerHex", enc: lowerHex(dotnetURLEncode)},
	{name: "PercentEveryByte", enc: percentEveryByte},
	{name: "PercentEveryByteLowerHex", enc: lowerHex(percentEveryByte)},
	{name: "GoHTMLEscape", enc: html.EscapeString},
	{name: "GoTextTemplateHTML", enc: texttemplate.HTMLEscapeString},
	{name: "GoHTMLTemplate", enc: htmlTemplate},
	{name: "PythonHTMLEscape", enc: pyHTMLEscape},
	{name: "PythonHTMLEscapeNoQuote", enc: strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace},
	{name: "PHPHTMLSpecialChars", enc: strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", `"`, "&quot;", "'", "&#039;").Replace},
	{name: "PHPHTMLSpecialCharsCompat", enc: strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", `"`, "&quot;").Replace},
	{name: "XMLApos", enc: strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", `"`, "&quot;", "'", "&apos;").Replace},
	{name: "LodashEscape", enc: strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", `"`, "&quot;", "'", "&#39;").Replace},
	{name: "HexLower", enc: func(s string) string { return hex.EncodeToString([]byte(s)) }, loose: true},
	{name: "HexUpper", enc: func(s string) string { return strings.ToUpper(hex.EncodeToString([]byte(s))) }, loose: true},
	{name: "Upper", enc: strings.ToUpper, loose: true},
	{name: "Lower", enc: strings.ToLower, loose: true},
}

func b64(enc *base64.Encoding) func(string) string {
	return func(s string) string { return enc.EncodeToString([]byte(s)) }
}

const alnum = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

// percentEncode escapes every byte of s that is not in unreserved as %XX
// with upper-case hex digits, a space as "+" when plus is set.
func percentEncode(s, unreserved string, plus bool) string {
	var b strings.Builder
	for _, c := range []byte(s) {
		switch {
		case strings.IndexByte(unreserved, c) >= 0:
			b.WriteByte(c)
		case plus && c == ' ':
			b.WriteByte('+')
		default:
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

// encodeURIComponent is JavaScript's (ECMA-262: uriUnreserved, the UTF-8 of
// everything else escaped).
func encodeURIComponent(s string) string { return percentEncode(s, alnum+"-_.!~*'()", false) }

// encodeURI is JavaScript's: uriUnreserved, uriReserved and '#' are kept.
func encodeURI(s string) string { return percentEncode(s, alnum+"-_.!~*'()"+";/?:@&=+$,"+"#", false) }

// pyQuote is Python's urllib.parse.quote(s, safe): letters, digits, "_.-~"
// and safe are kept.
func pyQuote(s, safe string) string { return percentEncode(s, alnum+"_.-~"+safe, false) }

// pyQuotePlus is Python's urllib.parse.quote_plus(s), as CPython writes it:
// quote with ' ' safe, then ' ' replaced by '+'.
func pyQuotePlus(s string) string {
	return strings.ReplaceAll(pyQuote(s, " "), " ", "+")
}

// javaURLEncode is Java's URLEncoder.encode(s, UTF_8): letters, digits and
// ".-*_" are kept, a space becomes '+'.
func javaURLEncode(s string) string { return percentEncode(s, alnum+".-*_", true) }

// phpURLEncode is PHP's urlencode: letters, digits and "-_." are kept, a
// space becomes '+'.
func phpURLEncode(s string) string { return percentEncode(s, alnum+"-_.", true) }

// dotnetURLEncode is .NET's WebUtility.UrlEncode: letters, digits and
// "-_.!*()" are kept, a space becomes '+'.
func dotnetURLEncode(s string) string { return percentEncode(s, alnum+"-_.!*()", true) }

func percentEveryByte(s string) string { return percentEncode(s, "", false) }

// lowerHex returns enc with the hex digits of its escapes in lower case.
func lowerHex(enc func(string) string) func(string) string {
	escape := regexp.MustCompile(`%[0-9A-F]{2}`)
	return func(s string) string { return escape.ReplaceAllStringFunc(enc(s), strings.ToLower) }
}

// pyHTMLEscape is Python's html.escape(s).
var pyHTMLEscape = strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", `"`, "&quot;", "'", "&#x27;").Replace

var htmlTmpl = htmltemplate.Must(htmltemplate.New("").Parse(`{{.}}`))

// htmlTemplate is what Go's html/template writes for s in HTML text.
func htmlTemplate(s string) string {
	var b strings.Builder
	if err := htmlTmpl.Execute(&b, s); err != nil {
		panic(err)
	}
	return b.String()
}

func jsonString(s string, escapeHTML bool) string {
	var b strings.Builder
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(escapeHTML)
	if err := enc.Encode(s); err != nil {
		panic(err)
	}
	out := strings.TrimSuffix(b.String(), "\n")
	return out[1 : len(out)-1]
}

// TestMaskEncodings checks that a secret printed by each of the encoders
// comes out masked.
func TestMaskEncodings(t *testing.T) {
	t.Parallel()
	secrets := []string{
		`p@ss w/rd+"<x>"` + "'!*()~;,?#$=&",
		"Xk9#mP2 vL7!qR4&'t(z)",
		"Pässwörd 😀 ünï",
		"hunter22",
		"1234",
	}
	for _, secret := range secrets {
		m := executor.NewMasker(secret)
		for _, e := range encoders {
			t.Run(e.name+"/"+secret, func(t *testing.T) {
				t.Parallel()
				text := "<p>before " + e.enc(secret) + " after</p>\n"
				if got, want := m.Mask(text), "<p>before ******** after</p>\n"; got != want {
					t.Errorf("Mask(%q) = %q, want %q", text, got, want)
				}
			})
		}
	}
}

// TestMaskShortSecret checks that a secret shorter than 4 bytes masks its
// exact forms only: not other letters, not digits.
func TestMaskShortSecret(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		secret, in, want string
	}{
		{"a", "a A 61 %61", "******** A 61 ********"},
		{"a&", "a& A& 6126 a&amp; a%26", "******** A& 6126 ******** ********"},
		{"pw1", "pw1 PW1 707731", "******** PW1 707731"},
		{"pw12", "pw12 PW12 70773132 70773132", "******** ******** ******** ********"},
	} {
		if got := executor.NewMasker(tc.secret).Mask(tc.in); got != tc.want {
			t.Errorf("NewMasker(%q).Mask(%q) = %q, want %q", tc.secret, tc.in, got, tc.want)
		}
	}
}

// TestEncodersMatchOtherLanguages checks the reference encoders against the
// languages they stand for: JavaScript (node), Python (python3) and Java.
func TestEncodersMatchOtherLanguages(t *testing.T) {
	t.Parallel()
	secrets := []string{`p@ss w/rd+"<x>"` + "'!*()~;,?#$=&%:[]{}|^`\\", "Pässwörd 😀 ünï\t\n", "plain"}
	in, err := json.Marshal(secrets)
	if err != nil {
		t.Fatal(err)
	}
	for _, lang := range []struct {
		name, command string
		args          []string
		encoders      []func(string) string
	}{
		{
			name: "node", command: "node",
			args: []string{"-e", `const fs = require("fs");
for (const s of JSON.parse(fs.readFileSync(0, "utf8"))) {
  console.log(JSON.stringify([encodeURIComponent(s), encodeURI(s)]));
}`},
			encoders: []func(string) string{encodeURIComponent, encodeURI},
		},
		{
			name: "python3", command: "python3",
			args: []string{"-c", `import html, json, sys, urllib.parse
for s in json.load(sys.stdin):
    print(json.dumps([urllib.parse.quote(s, safe=""), urllib.parse.quote(s), urllib.parse.quote_plus(s), html.escape(s), html.escape(s, quote=False)]))`},
			encoders: []func(string) string{
				func(s string) string { return pyQuote(s, "") },
				func(s string) string { return pyQuote(s, "/") },
				pyQuotePlus,
				pyHTMLEscape,
				strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace,
			},
		},
		{
			name: "java", command: "java",
			args:     []string{filepath.Join("testdata", "URLEncode.java")},
			encoders: []func(string) string{javaURLEncode},
		},
	} {
		t.Run(lang.name, func(t *testing.T) {
			t.Parallel()
			path, err := exec.LookPath(lang.command)
			if err != nil {
				t.Skipf("%s not found in PATH: install it to check the reference encoders against it", lang.command)
			}
			cmd := exec.Command(path, lang.args...)
			cmd.Stdin = bytes.NewReader(in)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("%s: %v\n%s", lang.command, err, stderr.Bytes())
			}
			lines := strings.Split(strings.TrimSuffix(string(out), "\n"), "\n")
			if len(lines) != len(secrets) {
				t.Fatalf("%s printed %d lines for %d secrets: %q", lang.command, len(lines), len(secrets), out)
			}
			for i, s := range secrets {
				var got []string
				if err := json.Unmarshal([]byte(lines[i]), &got); err != nil || len(got) != len(lang.encoders) {
					t.Fatalf("%s printed %q (%v)", lang.command, lines[i], err)
				}
				for j, enc := range lang.encoders {
					if want := enc(s); got[j] != want {
						t.Errorf("%q, encoder %d: %s wrote %q, the reference %q", s, j, lang.command, got[j], want)
					}
				}
			}
		})
	}
}

// FuzzMask checks the masker against a plain reference (every occurrence
// of every variant found by brute force), and that a secret printed by any
// of the encoders anywhere in a text has every byte of that form masked.
func FuzzMask(f *testing.F) {
	f.Add("secret", "the secret is secret")
	f.Add("aa", "aaaaa")
	f.Add("a*", "a")
	f.Add(`p@ss w/rd+"<x>"'`, "log: GET /?q=1&x=%41 <b>")
	f.Add("Pässwörd 😀", "Ä")
	f.Fuzz(func(t *testing.T, secret, text string) {
		m := executor.NewMasker(secret)
		variants := payload.SecretVariants(secret)
		if got, want := m.Mask(text), refMask(text, variants); got != want {
			t.Fatalf("NewMasker(%q).Mask(%q) = %q, want %q", secret, text, got, want)
		}
		if secret == "" {
			return
		}
		mid := len(text) / 2
		for _, e := range encoders {
			if e.loose && len(secret) < 4 || e.utf8 && !utf8.ValidString(secret) {
				continue
			}
			form := e.enc(secret)
			in := text[:mid] + form + text[mid:]
			hidden := refHidden(in, variants)
			if i := slices.Index(hidden[mid:mid+len(form)], false); i >= 0 {
				t.Errorf("%s: byte %d of %q, in %q, is not masked", e.name, i, form, in)
			}
			if got, want := m.Mask(in), refRender(in, hidden); got != want {
				t.Fatalf("NewMasker(%q).Mask(%q) = %q, want %q", secret, in, got, want)
			}
		}
	})
}

// refHidden marks every byte of s in an occurrence of a variant.
func refHidden(s string, variants []string) []bool {
	hidden := make([]bool, len(s))
	for _, v := range variants {
		for i := 0; i+len(v) <= len(s); i++ {
			if s[i:i+len(v)] == v {
				for k := i; k < i+len(v); k++ {
					hidden[k] = true
				}
			}
		}
	}
	return hidden
}

// refRender replaces every run of hidden bytes of s by one Mask.
func refRender(s string, hidden []bool) string {
	var b strings.Builder
	for i := range len(s) {
		switch {
		case !hidden[i]:
			b.WriteByte(s[i])
		case i == 0 || !hidden[i-1]:
			b.WriteString(executor.Mask)
		}
	}
	return b.String()
}

func refMask(s string, variants []string) string { return refRender(s, refHidden(s, variants)) }

func TestMaskError(t *testing.T) {
	t.Parallel()
	m := executor.NewMasker("hunter2")
	cause := errors.New("cause")
	err := m.MaskError(fmt.Errorf("open /x/hunter2: %w", cause))
	if err.Error() != "open /x/********: cause" || !errors.Is(err, cause) {
		t.Errorf("got %q (wraps cause: %v)", err, errors.Is(err, cause))
	}
	if m.MaskError(nil) != nil || m.MaskError(cause) != cause {
		t.Error("nil or clean errors should come back unchanged")
	}
}

// benchJob is a job as the coordinator sends it: the secrets of a payload
// built from three records (new and old password, the admin's password, an
// API key, the records and the stdin line as a whole) and its stdin line.
func benchJob(b *testing.B) executor.Job {
	b.Helper()
	in := payload.Input{
		Configuration: &payload.Record{UID: "CfgRecord0000000000000", Type: "pamNetworkConfiguration", Title: "network", Fields: []payload.Field{
			{Type: "secret", Label: "apiKey", Value: []any{"sk_live_51HqX7bK2eZvKYlo2C8x"}},
		}},
		Resource: &payload.Record{UID: "ResRecord0000000000000", Type: "pamMachine", Title: "db-01", Fields: []payload.Field{
			{Type: "pamHostname", Value: []any{map[string]any{"hostName": "db-01.example.com", "port": "22"}}},
			{Type: "login", Value: []any{"admin"}},
			{Type: "password", Value: []any{"Adm1n/Pa$$w0rd+2024"}},
		}},
		User: payload.Record{UID: "UsrRecord0000000000000", Type: "pamUser", Title: "svc-app", Fields: []payload.Field{
			{Type: "login", Value: []any{"svc-app"}},
			{Type: "password", Value: []any{"Xk9#mP2 vL7!qR4&'t(z)"}},
		}},
		NewPassword: "Xk9#mP2 vL7!qR4&'t(z)",
		OldPassword: "old~Pa55word*\"quoted\"",
	}
	p, err := payload.Build(in)
	if err != nil {
		b.Fatal(err)
	}
	stdin, err := p.Encode()
	if err != nil {
		b.Fatal(err)
	}
	return executor.Job{Stdin: stdin, Secrets: append(in.Secrets(), p.Secrets()...)}
}

// benchOutput returns about size bytes of log-like script output: lines of
// words, numbers, hex digests, URLs with query strings, JSON and HTML.
func benchOutput(size int) string {
	r := rand.New(rand.NewPCG(1, 2))
	words := []string{"connecting", "to", "db-01.example.com", "ALTER", "USER", "svc-app", "OK", "rows", "affected", "The", "password", "for", "was", "updated", "retry", "INFO", "WARN", "<td>", "&amp;", "%20"}
	var b strings.Builder
	for b.Len() < size {
		fmt.Fprintf(&b, "2026-05-01T12:%02d:%02d.%03dZ ", r.IntN(60), r.IntN(60), r.IntN(1000))
		for range 4 + r.IntN(8) {
			b.WriteString(words[r.IntN(len(words))])
			b.WriteByte(' ')
		}
		switch r.IntN(4) {
		case 0:
			fmt.Fprintf(&b, "sha256=%016x%016x", r.Uint64(), r.Uint64())
		case 1:
			fmt.Fprintf(&b, "GET /api/v1/users?id=%d&name=svc%%2Dapp&token=%X", r.IntN(1e6), r.Uint64())
		case 2:
			fmt.Fprintf(&b, `{"id":%d,"status":"ok","msg":"user \"svc-app\" updated"}`, r.IntN(1e6))
		case 3:
			fmt.Fprintf(&b, "<p class=\"x\">%d &lt;items&gt;</p>", r.IntN(1e6))
		}
		b.WriteByte('\n')
	}
	return b.String()
}

// BenchmarkMask masks 1 MiB of output for a job's masker: output without a
// secret (the usual case) and output holding one every 4 KiB or so, in
// several forms.
func BenchmarkMask(b *testing.B) {
	job := benchJob(b)
	m := job.Masker()
	clean := benchOutput(1 << 20)
	pw := job.Secrets[0]
	forms := []string{pw, base64.StdEncoding.EncodeToString([]byte(pw)), url.QueryEscape(pw), strings.TrimSuffix(string(job.Stdin), "\n")}
	var dirty strings.Builder
	for i, line := range strings.SplitAfter(clean, "\n") {
		dirty.WriteString(line)
		if i%40 == 39 {
			dirty.WriteString("echo " + forms[(i/40)%len(forms)] + "\n")
		}
	}
	for _, bc := range []struct {
		name, text string
	}{
		{"Clean1MiB", clean},
		{"Secrets1MiB", dirty.String()},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.SetBytes(int64(len(bc.text)))
			for b.Loop() {
				m.Mask(bc.text)
			}
		})
	}
}

// BenchmarkNewMasker builds a job's masker: its secrets and all their
// variants.
func BenchmarkNewMasker(b *testing.B) {
	job := benchJob(b)
	for b.Loop() {
		job.Masker()
	}
}
