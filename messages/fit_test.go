package messages

import (
	"encoding/json"
	"errors"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// fitResult is a result whose outputs the tests set.
func fitResult(stdout, stderr string) RotationResult {
	at := time.Date(2025, 3, 14, 15, 9, 26, 0, time.UTC)
	return RotationResult{
		UID: "svc-user", Command: "/bin/sh big.sh", System: SystemLinux, Title: "Big", Name: "big.sh", Success: true,
		Stdout: stdout, Stderr: stderr, SchemaVersion: SchemaVersion, RotationID: "r-1", Step: 2, Host: "gw", Worker: "gw-a",
		Attempt: 1, StartedAt: at, FinishedAt: at.Add(time.Second), DurationMS: 1000,
	}
}

// roundTrip is rr as a reader of its full encoding sees it (invalid UTF-8
// replaced).
func roundTrip(t *testing.T, rr RotationResult) RotationResult {
	t.Helper()
	data, err := json.Marshal(rr)
	if err != nil {
		t.Fatal(err)
	}
	back, err := DecodeResult(data)
	if err != nil {
		t.Fatal(err)
	}
	return back
}

// cutAt splits a shortened output at a marker whose head is a prefix of
// orig and whose tail a suffix; ok is false when no marker does.
func cutAt(got, orig string) (head, tail string, n int64, ok bool) {
	for i := 0; ; i++ {
		k := strings.Index(got[i:], omittedHead)
		if k < 0 {
			return "", "", 0, false
		}
		i += k
		rest := got[i+len(omittedHead):]
		digits := strings.Index(rest, omittedTail)
		if digits < 0 {
			return "", "", 0, false
		}
		v, err := strconv.ParseInt(rest[:digits], 10, 64)
		head, tail = got[:i], rest[digits+len(omittedTail):]
		if err == nil && strings.HasPrefix(orig, head) && strings.HasSuffix(orig, tail) {
			return head, tail, v, true
		}
	}
}

func TestEncodeResultWithin(t *testing.T) {
	t.Parallel()
	const limit = 4096
	big := func(unit string, size int) string { return strings.Repeat(unit, size/len(unit)+1)[:size] }
	// Cut the way executor.Output cuts: 1000 bytes omitted between "H..." and "...T".
	capped := big("H", 3000) + "\n[postrotate: 1000 bytes omitted]\n" + big("T", 3000)
	for _, tt := range []struct {
		name           string
		stdout, stderr string
		outCut         bool // the executor already capped stdout
		// wantOut and wantErr say which output is shortened.
		wantOut, wantErr bool
	}{
		{name: "Fits", stdout: "ok\n", stderr: "warning\n"},
		{name: "StdoutOnly", stdout: big("a", 100_000), stderr: "short", wantOut: true},
		{name: "StderrOnly", stdout: "", stderr: big("b\n", 100_000), wantErr: true},
		{name: "BothShareEvenly", stdout: big("a", 100_000), stderr: big("b", 100_000), wantOut: true, wantErr: true},
		{name: "ShortOneKeptWhole", stdout: big("a", 1500), stderr: big("b", 100_000), wantErr: true},
		{name: "ControlCharactersGrowSixfold", stdout: big("\x00\x01\x1f", 30_000), wantOut: true},
		{name: "HTMLAndLineSeparatorsEscaped", stdout: big("<&>\u2028\u2029", 30_000), wantOut: true},
		{name: "InvalidUTF8", stdout: big("\xff\xfe\x80", 30_000), stderr: big("\xe2\x82", 30_000), wantOut: true, wantErr: true},
		{name: "MultibyteNotSplit", stdout: big("é😀€", 30_000), stderr: big("x€", 30_000), wantOut: true, wantErr: true},
		{name: "QuotesAndBackslashes", stdout: big(`"\`, 30_000), wantOut: true},
		{name: "AlreadyCappedMergesMarker", stdout: capped, outCut: true, wantOut: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			rr := fitResult(tt.stdout, tt.stderr)
			rr.StdoutTruncated = tt.outCut
			data, err := EncodeResultWithin(rr, limit)
			if err != nil {
				t.Fatal(err)
			}
			if len(data) > limit {
				t.Fatalf("%d bytes, limit %d", len(data), limit)
			}
			got, err := DecodeResult(data)
			if err != nil {
				t.Fatal(err)
			}
			want := roundTrip(t, rr)
			if !tt.wantOut && !tt.wantErr {
				full, _ := json.Marshal(rr)
				if string(data) != string(full) {
					t.Fatalf("a result that fits changed:\n got %s\nwant %s", data, full)
				}
				return
			}
			// The room left is used: at most two cut characters (6
			// bytes each), the marker's spare digits and the flags wasted.
			if len(data) < limit-40 {
				t.Errorf("%d bytes of %d used", len(data), limit)
			}
			for _, o := range []struct {
				name           string
				got, orig, raw string
				cut, wasCut    bool
				shortened      bool
			}{
				{"stdout", got.Stdout, want.Stdout, rr.Stdout, got.StdoutTruncated, tt.outCut, tt.wantOut},
				{"stderr", got.Stderr, want.Stderr, rr.Stderr, got.StderrTruncated, false, tt.wantErr},
			} {
				if !o.shortened {
					if o.got != o.orig || o.cut != o.wasCut {
						t.Errorf("%s changed: %q, truncated %v", o.name, o.got, o.cut)
					}
					continue
				}
				if !o.cut {
					t.Errorf("%s shortened but not marked truncated", o.name)
				}
				if utf8.ValidString(o.raw) && !utf8.ValidString(o.got) {
					t.Errorf("%s: a cut split a UTF-8 sequence", o.name)
				}
				head, tail, n, ok := cutAt(o.got, o.orig)
				if !ok {
					t.Fatalf("%s is not a head, a marker and a tail of the output: %.200q", o.name, o.got)
				}
				if strings.Count(o.got, omittedHead) != 1 {
					t.Errorf("%s holds %d markers, want 1", o.name, strings.Count(o.got, omittedHead))
				}
				wantN := int64(len(o.orig) - len(head) - len(tail))
				if tt.outCut && o.name == "stdout" {
					wantN += 1000 - int64(len("\n[postrotate: 1000 bytes omitted]\n"))
				}
				if utf8.ValidString(o.raw) && n != wantN {
					t.Errorf("%s: marker says %d bytes omitted, want %d", o.name, n, wantN)
				}
				if len(head) == 0 || len(tail) == 0 {
					t.Errorf("%s: head %d bytes, tail %d bytes: want both kept", o.name, len(head), len(tail))
				}
			}
			if tt.wantOut && tt.wantErr && tt.name == "BothShareEvenly" {
				if d := len(got.Stdout) - len(got.Stderr); d < -2 || d > 2 {
					t.Errorf("stdout %d bytes, stderr %d: not shared evenly", len(got.Stdout), len(got.Stderr))
				}
			}
			got.Stdout, got.Stderr, got.StdoutTruncated, got.StderrTruncated = "", "", false, false
			want.Stdout, want.Stderr, want.StdoutTruncated, want.StderrTruncated = "", "", false, false
			if !reflect.DeepEqual(got, want) {
				t.Errorf("other fields changed:\n got %+v\nwant %+v", got, want)
			}
		})
	}
}

func TestEncodeResultWithinTooLarge(t *testing.T) {
	t.Parallel()
	rr := fitResult("out", "err")
	rr.Error = strings.Repeat("e", 2000)
	if _, err := EncodeResultWithin(rr, 1000); !errors.Is(err, ErrResultTooLarge) {
		t.Fatalf("err = %v, want ErrResultTooLarge", err)
	}
	// Room for the other fields but not for a marker: empty outputs.
	bare := rr
	bare.Stdout, bare.Stderr, bare.StdoutTruncated, bare.StderrTruncated = "", "", true, true
	least, err := json.Marshal(bare)
	if err != nil {
		t.Fatal(err)
	}
	rr.Stdout = strings.Repeat("o", 1000)
	data, err := EncodeResultWithin(rr, len(least)+10)
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeResult(data)
	if err != nil {
		t.Fatal(err)
	}
	if got.Stdout != "" || !got.StdoutTruncated || got.Stderr != "err" || got.StderrTruncated || got.Error != rr.Error {
		t.Fatalf("got %+v", got)
	}
}

func TestEncodedLenMatchesJSON(t *testing.T) {
	t.Parallel()
	for _, s := range []string{"", "plain", "\x00\x1f\x7f", `<>&"\`, "\u2028\u2029", "é😀", "\xff\xe2\x82", "\xef\xbf\xbd", "\b\f\n\r\t"} {
		b, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := encodedLen(s), len(b)-2; got != want {
			t.Errorf("encodedLen(%q) = %d, json.Marshal writes %d", s, got, want)
		}
	}
}

func FuzzEncodeResultWithin(f *testing.F) {
	f.Add("ok\n", "", false, false, "", 1<<20)
	f.Add(strings.Repeat("a", 5000), strings.Repeat("b", 3000), false, false, "", 2000)
	f.Add(strings.Repeat("\x00é\xff<\u2028", 1000), "x", false, true, "timed out", 1500)
	f.Add("H\n[postrotate: 77 bytes omitted]\nT"+strings.Repeat("z", 900), "", true, false, "", 600)
	f.Add("\n[postrotate: 1 bytes omitted]\n\n[postrotate: 2 bytes omitted]\n", "err", true, true, "", 420)
	f.Add("out", "err", false, false, strings.Repeat("e", 500), 300)
	f.Fuzz(func(t *testing.T, stdout, stderr string, outCut, errCut bool, why string, limit int) {
		limit %= 1 << 16
		rr := fitResult(stdout, stderr)
		rr.StdoutTruncated, rr.StderrTruncated, rr.Error = outCut, errCut, why
		bare := rr
		bare.Stdout, bare.StdoutTruncated = "", outCut || stdout != ""
		bare.Stderr, bare.StderrTruncated = "", errCut || stderr != ""
		least, err := json.Marshal(bare)
		if err != nil {
			t.Fatal(err)
		}
		data, err := EncodeResultWithin(rr, limit)
		if err != nil {
			if !errors.Is(err, ErrResultTooLarge) || len(least) <= limit {
				t.Fatalf("limit %d, %d bytes with empty outputs: %v", limit, len(least), err)
			}
			return
		}
		if len(data) > limit {
			t.Fatalf("%d bytes, limit %d", len(data), limit)
		}
		got, err := DecodeResult(data)
		if err != nil {
			t.Fatalf("decode: %v\n%s", err, data)
		}
		want := roundTrip(t, rr)
		if full, _ := json.Marshal(rr); len(full) <= limit && string(full) != string(data) {
			t.Fatalf("a result that fits changed:\n got %s\nwant %s", data, full)
		}
		for _, o := range []struct {
			name, got, orig, raw string
			cut, wasCut          bool
		}{
			{"stdout", got.Stdout, want.Stdout, stdout, got.StdoutTruncated, outCut},
			{"stderr", got.Stderr, want.Stderr, stderr, got.StderrTruncated, errCut},
		} {
			if o.got == o.orig {
				if o.cut != o.wasCut {
					t.Errorf("%s kept whole but its truncated flag changed to %v", o.name, o.cut)
				}
				continue
			}
			if !o.cut {
				t.Errorf("%s shortened but not marked truncated", o.name)
			}
			if utf8.ValidString(o.raw) && !utf8.ValidString(o.got) {
				t.Errorf("%s: a cut split a UTF-8 sequence", o.name)
			}
			if _, _, _, ok := cutAt(o.got, o.orig); !ok && o.got != "" {
				t.Errorf("%s is not a head, a marker and a tail of the output: %q", o.name, o.got)
			}
		}
		got.Stdout, got.Stderr, got.StdoutTruncated, got.StderrTruncated = "", "", false, false
		want.Stdout, want.Stderr, want.StdoutTruncated, want.StderrTruncated = "", "", false, false
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("other fields changed:\n got %+v\nwant %+v", got, want)
		}
	})
}
