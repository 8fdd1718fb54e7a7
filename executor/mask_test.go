package executor_test

import (
	"encoding/base64"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/url"
	"strings"
	"testing"

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

func FuzzMask(f *testing.F) {
	f.Add("secret", "the secret is secret")
	f.Add("aa", "aaaaa")
	f.Fuzz(func(t *testing.T, secret, text string) {
		m := executor.NewMasker(secret)
		got := m.Mask(text)
		if secret != "" && secret != executor.Mask && !strings.Contains(executor.Mask, secret) && strings.Contains(got, secret) {
			t.Errorf("Mask(%q) = %q still holds %q", text, got, secret)
		}
	})
}

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
