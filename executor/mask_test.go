package executor_test

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"testing"

	"github.com/postrotate/postrotate/executor"
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
