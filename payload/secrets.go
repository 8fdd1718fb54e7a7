package payload

import (
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"net/url"
	"slices"
	"strings"
)

// secretFieldTypes are the field types whose every string is a secret.
var secretFieldTypes = map[string]bool{
	"password":    true,
	"secret":      true,
	"pinCode":     true,
	"oneTimeCode": true,
	"otp":         true,
	"privateKey":  true,
}

// Secrets returns the string values of r's secret fields, in field order,
// without duplicates or empty strings.
//
// The secret fields are those of type password, secret, pinCode,
// oneTimeCode, otp and privateKey, the "privateKey" member of keyPair values,
// and any field with Secret set. Strings inside a map or array value count
// too. For a one-time code given as an otpauth:// URI, the URI's "secret"
// parameter (the TOTP seed) is returned as well as the URI.
func (r Record) Secrets() []string {
	var s secretSet
	for _, f := range r.Fields {
		for _, v := range f.Value {
			switch {
			case f.Secret || secretFieldTypes[f.Type]:
				s.addStrings(v, 0)
			case f.Type == "keyPair":
				if m, ok := v.(map[string]any); ok {
					s.addStrings(m["privateKey"], 0)
				}
				if m, ok := v.(map[string]string); ok {
					s.add(m["privateKey"])
				}
			}
			if f.Type == "oneTimeCode" || f.Type == "otp" {
				if str, ok := v.(string); ok {
					s.add(otpSeed(str))
				}
			}
		}
	}
	return s.list
}

// Secrets returns every secret of in: NewPassword, OldPassword and the
// [Record.Secrets] of every record, without duplicates or empty strings.
// Pass them through [SecretVariants] to mask a script's output.
func (in Input) Secrets() []string {
	var s secretSet
	s.add(in.NewPassword)
	s.add(in.OldPassword)
	var recs []Record
	if in.Configuration != nil {
		recs = append(recs, *in.Configuration)
	}
	if in.Resource != nil {
		recs = append(recs, *in.Resource)
	}
	recs = append(recs, in.Additional...)
	recs = append(recs, in.User)
	for _, r := range recs {
		for _, v := range r.Secrets() {
			s.add(v)
		}
	}
	return s.list
}

// Secrets returns the parts of p that carry secrets as a whole: NewPassword,
// OldPassword, Records (which holds every record's secrets) and the stdin
// line without its "\n" (what a script that echoes its input prints). Mask
// these as well as [Input.Secrets]: a record's secret inside Records is
// base64 at an arbitrary offset, which [SecretVariants] covers only partly.
func (p Params) Secrets() []string {
	var s secretSet
	s.add(p.NewPassword)
	s.add(p.OldPassword)
	s.add(p.Records)
	if line, err := p.Encode(); err == nil {
		s.add(strings.TrimSuffix(string(line), "\n"))
	}
	return s.list
}

// secretSet collects secrets in order, without duplicates or empty strings.
type secretSet struct {
	seen map[string]bool
	list []string
}

func (s *secretSet) add(v string) {
	if v == "" || s.seen[v] {
		return
	}
	if s.seen == nil {
		s.seen = make(map[string]bool)
	}
	s.seen[v] = true
	s.list = append(s.list, v)
}

// addStrings adds every string in v, descending into arrays and maps (in key
// order, so the result is deterministic).
func (s *secretSet) addStrings(v any, depth int) {
	if depth > maxDepth {
		return
	}
	switch v := v.(type) {
	case string:
		s.add(v)
	case []string:
		for _, e := range v {
			s.add(e)
		}
	case []any:
		for _, e := range v {
			s.addStrings(e, depth+1)
		}
	case map[string]string:
		for _, k := range slices.Sorted(maps.Keys(v)) {
			s.add(v[k])
		}
	case map[string]any:
		for _, k := range slices.Sorted(maps.Keys(v)) {
			s.addStrings(v[k], depth+1)
		}
	}
}

// otpSeed returns the "secret" parameter of an otpauth:// URI, or "".
func otpSeed(uri string) string {
	u, err := url.Parse(uri)
	if err != nil || !strings.EqualFold(u.Scheme, "otpauth") {
		return ""
	}
	return u.Query().Get("secret")
}

// minShiftedLen is the shortest base64 fragment SecretVariants returns for
// a secret embedded in a longer base64 text. Shorter fragments would mask
// unrelated output.
const minShiftedLen = 8

// minLooseLen is the shortest secret (in bytes) whose upper- and lower-cased
// forms and hex SecretVariants returns. Those forms are not escapes of the
// secret that only it produces: a 1-byte secret's upper case is any other
// letter, its hex two digits of any number.
const minLooseLen = 4

// SecretVariants returns every form in which one of the secrets may show up
// in a script's output, for a masker to replace in order:
//
//   - the raw value;
//   - its standard and URL-safe base64, with and without padding;
//   - the part of its base64 that does not depend on what surrounds it, for
//     each of the three alignments, when the secret sits inside a longer
//     base64 text (as it does in the stdin line and in records), for the
//     raw value and its JSON-escaped form; only fragments of at least 8
//     characters;
//   - its JSON-escaped forms as Go writes them (with and without HTML
//     escaping) and as Python's json.dumps writes them (ensure_ascii true
//     and false);
//   - its percent-encoded forms, with upper- and lower-case hex digits, as
//     Go's url.QueryEscape and url.PathEscape, JavaScript's
//     encodeURIComponent and encodeURI, Python's quote (safe "" and "/")
//     and quote_plus, Java's URLEncoder, PHP's urlencode and .NET's
//     WebUtility.UrlEncode write them, and with every byte escaped;
//   - its HTML-escaped forms: &amp; &lt; &gt;, with the quotes as &#34;
//     and &#39; (Go), &quot; and &#x27; (Python), &#39;, &#039; or &apos;,
//     or left alone, NUL as U+FFFD (Go's templates) and '+' as &#43; (Go's
//     html/template);
//   - for a secret of at least 4 bytes, its upper- and lower-case forms and
//     the hex of its bytes in lower and upper case.
//
// Empty secrets are dropped, duplicates removed, and the result is sorted
// longest first (ties in the order above), so that a masker replacing in
// order never leaves a fragment of a longer variant behind.
func SecretVariants(secrets ...string) []string {
	var s secretSet
	for _, secret := range secrets {
		if secret == "" {
			continue
		}
		s.add(secret)
		for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
			s.add(enc.EncodeToString([]byte(secret)))
		}
		for _, form := range []string{secret, jsonEscape(secret, false)} {
			for shift := range 3 {
				for _, enc := range []*base64.Encoding{base64.RawStdEncoding, base64.RawURLEncoding} {
					if f := base64Embedded(enc, form, shift); len(f) >= minShiftedLen {
						s.add(f)
					}
				}
			}
		}
		s.add(jsonEscape(secret, true))
		s.add(jsonEscape(secret, false))
		s.add(pythonJSONEscape(secret, true))
		s.add(pythonJSONEscape(secret, false))
		for _, style := range percentStyles {
			e := style.encode(secret)
			s.add(e)
			s.add(lowerPercentHex(e))
		}
		s.add(url.PathEscape(secret))
		s.add(lowerPercentHex(url.PathEscape(secret)))
		for _, style := range htmlStyles {
			s.add(style.escape(secret))
		}
		if len(secret) >= minLooseLen {
			s.add(strings.ToUpper(secret))
			s.add(strings.ToLower(secret))
			h := hex.EncodeToString([]byte(secret))
			s.add(h)
			s.add(strings.ToUpper(h))
		}
	}
	out := s.list
	slices.SortStableFunc(out, func(a, b string) int { return len(b) - len(a) })
	return out
}

// percentStyle is one way of percent-encoding a string: the bytes of its
// UTF-8 that are ASCII letters or digits or among keep are kept (unless
// every byte is escaped), a space becomes "+" when plus is set, and every
// other byte becomes "%XX" with upper-case hex digits.
type percentStyle struct {
	keep  string
	plus  bool
	every bool
}

// percentStyles are the percent-encodings SecretVariants covers, besides
// Go's url.PathEscape, which it calls.
var percentStyles = []percentStyle{
	{keep: "-_.~", plus: true},     // Go url.QueryEscape, Python quote_plus
	{keep: "-_.!~*'()"},            // JavaScript encodeURIComponent
	{keep: "-_.!~*'();/?:@&=+$,#"}, // JavaScript encodeURI
	{keep: "-_.~"},                 // Python quote(s, safe=""), RFC 3986: PHP rawurlencode, .NET Uri.EscapeDataString
	{keep: "-_.~/"},                // Python quote(s), whose default is safe="/"
	{keep: "-_.*", plus: true},     // Java URLEncoder.encode
	{keep: "-_.", plus: true},      // PHP urlencode
	{keep: "-_.!*()", plus: true},  // .NET WebUtility.UrlEncode
	{every: true},                  // every byte, letters and digits too
}

// encode returns s percent-encoded in style p.
func (p percentStyle) encode(s string) string {
	const upperHex = "0123456789ABCDEF"
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case !p.every && (isASCIIAlnum(c) || strings.IndexByte(p.keep, c) >= 0):
			b.WriteByte(c)
		case !p.every && p.plus && c == ' ':
			b.WriteByte('+')
		default:
			b.WriteByte('%')
			b.WriteByte(upperHex[c>>4])
			b.WriteByte(upperHex[c&15])
		}
	}
	return b.String()
}

func isASCIIAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

// lowerPercentHex returns the percent-encoded s with the two hex digits
// after every '%' in lower case. Every percent-encoding escapes '%' itself,
// so each '%' in s starts an escape.
func lowerPercentHex(s string) string {
	if !strings.Contains(s, "%") {
		return s
	}
	b := []byte(s)
	for i := 0; i+2 < len(b); i++ {
		if b[i] == '%' {
			b[i+1], b[i+2] = toLowerASCII(b[i+1]), toLowerASCII(b[i+2])
			i += 2
		}
	}
	return string(b)
}

func toLowerASCII(c byte) byte {
	if c >= 'A' && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// htmlStyle is one way of escaping a string for HTML or XML: '&', '<' and
// '>' always become &amp; &lt; &gt;; the double quote, the apostrophe, '+'
// and NUL become quot, apos, plus and nul when those are not empty.
type htmlStyle struct {
	quot, apos, plus, nul string
}

// htmlStyles are the HTML escapings SecretVariants covers.
var htmlStyles = []htmlStyle{
	{quot: "&#34;", apos: "&#39;"},                               // Go html.EscapeString, Jinja2 (MarkupSafe)
	{quot: "&#34;", apos: "&#39;", nul: "\uFFFD"},                // Go text/template HTMLEscapeString
	{quot: "&#34;", apos: "&#39;", plus: "&#43;", nul: "\uFFFD"}, // Go html/template, in HTML text
	{quot: "&quot;", apos: "&#x27;"},                             // Python html.escape, Django
	{quot: "&quot;", apos: "&#39;"},                              // lodash _.escape, Ruby CGI.escapeHTML, .NET WebUtility.HtmlEncode, Spring HtmlUtils
	{quot: "&quot;", apos: "&#039;"},                             // PHP htmlspecialchars (ENT_QUOTES, PHP 8.1's default)
	{quot: "&quot;", apos: "&apos;"},                             // XML, PHP htmlspecialchars with ENT_HTML5
	{quot: "&quot;"},                                             // PHP before 8.1 (ENT_COMPAT)
	{},                                                           // Python html.escape(s, quote=False), XML text
}

// escape returns s HTML-escaped in style h.
func (h htmlStyle) escape(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '&':
			b.WriteString("&amp;")
		case c == '<':
			b.WriteString("&lt;")
		case c == '>':
			b.WriteString("&gt;")
		case c == '"' && h.quot != "":
			b.WriteString(h.quot)
		case c == '\'' && h.apos != "":
			b.WriteString(h.apos)
		case c == '+' && h.plus != "":
			b.WriteString(h.plus)
		case c == 0 && h.nul != "":
			b.WriteString(h.nul)
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// base64Embedded returns the characters of the base64 of s that are the
// same wherever s sits in a longer text, given that s starts shift bytes
// (mod 3) after the start of that text. Characters that mix bits of s with
// bits of its neighbours are left out.
func base64Embedded(enc *base64.Encoding, s string, shift int) string {
	b := make([]byte, shift, shift+len(s))
	b = append(b, s...)
	e := enc.EncodeToString(b) // unpadded
	// Leading characters holding bits of the shift bytes: none, 2 or 3.
	skip := [3]int{0, 2, 3}[shift]
	// A final partial group's last character is padded with zero bits
	// where the next byte would go.
	end := len(e)
	if len(b)%3 != 0 {
		end--
	}
	if end <= skip {
		return ""
	}
	return e[skip:end]
}

// jsonEscape returns s as encoding/json writes it inside a JSON string,
// without the surrounding quotes.
func jsonEscape(s string, escapeHTML bool) string {
	var b strings.Builder
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(escapeHTML)
	if err := enc.Encode(s); err != nil {
		return s
	}
	out := strings.TrimSuffix(b.String(), "\n")
	return out[1 : len(out)-1]
}

// pythonJSONEscape returns s as Python's json.dumps writes it inside a JSON
// string, without the surrounding quotes. With asciiOnly (Python's default
// ensure_ascii=True) everything outside printable ASCII becomes \uXXXX, with
// surrogate pairs beyond the Basic Multilingual Plane.
func pythonJSONEscape(s string, asciiOnly bool) string {
	var b strings.Builder
	for _, r := range s {
		switch r {
		case '"':
			b.WriteString(`\"`)
		case '\\':
			b.WriteString(`\\`)
		case '\n':
			b.WriteString(`\n`)
		case '\r':
			b.WriteString(`\r`)
		case '\t':
			b.WriteString(`\t`)
		case '\b':
			b.WriteString(`\b`)
		case '\f':
			b.WriteString(`\f`)
		default:
			switch {
			case r < 0x20:
				fmt.Fprintf(&b, `\u%04x`, r)
			case asciiOnly && r > 0x7e && r <= 0xffff:
				fmt.Fprintf(&b, `\u%04x`, r)
			case asciiOnly && r > 0xffff:
				r -= 0x10000
				fmt.Fprintf(&b, `\u%04x\u%04x`, 0xd800+(r>>10), 0xdc00+(r&0x3ff))
			default:
				b.WriteRune(r)
			}
		}
	}
	return b.String()
}
