package ssh

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func TestMarkerFilter(t *testing.T) {
	t.Parallel()
	const marker = "postrotate-pgid-abc"
	for _, tc := range []struct {
		name     string
		writes   []string
		want     string
		wantPGID int
	}{
		{"MarkerFirst", []string{marker + " 4242\nscript err\n"}, "script err\n", 4242},
		{"SplitAcrossWrites", []string{"postrotate-pg", "id-abc 42", "42\nscr", "ipt\n"}, "script\n", 4242},
		{"LoginNoiseBefore", []string{"Could not chdir to home directory\n", marker + " 7\n", "x"}, "Could not chdir to home directory\nx", 7},
		{"ForgedAfterMarker", []string{marker + " 7\n" + marker + " 8\n"}, marker + " 8\n", 7},
		{"OtherToken", []string{"postrotate-pgid-zzz 9\n"}, "postrotate-pgid-zzz 9\n", 0},
		{"PGIDOneRefused", []string{marker + " 1\n"}, marker + " 1\n", 0},
		{"NoMarkerPartialLine", []string{"no newline"}, "no newline", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var out bytes.Buffer
			f := newMarkerFilter(marker, &out)
			for _, w := range tc.writes {
				if n, err := f.Write([]byte(w)); n != len(w) || err != nil {
					t.Fatalf("Write = %d, %v", n, err)
				}
			}
			f.Flush()
			if out.String() != tc.want || f.PGID() != tc.wantPGID {
				t.Errorf("out %q, pgid %d; want %q, %d", out.String(), f.PGID(), tc.want, tc.wantPGID)
			}
		})
	}
}

func TestLongPreludeLineIsPassedOn(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	f := newMarkerFilter("m", &out)
	long := strings.Repeat("x", maxPreludeLine+1)
	_, _ = f.Write([]byte(long))
	if out.Len() != len(long) {
		t.Errorf("%d bytes passed on, want %d: a long line is not held back", out.Len(), len(long))
	}
}

func TestValidRunDir(t *testing.T) {
	t.Parallel()
	for dir, want := range map[string]bool{
		"/tmp/postrotate-AbC123":     true,
		"//var/tmp/postrotate-x":     true,
		"/":                          false,
		"":                           false,
		"tmp/postrotate-x":           false,
		"/tmp/postrotate-":           false,
		"/tmp/other":                 false,
		"/tmp/postrotate-x/..":       false,
		"/tmp/postrotate-x\n/etc":    false,
		"/home/user/postrotate-1234": true,
	} {
		if got := validRunDir(dir); got != want {
			t.Errorf("validRunDir(%q) = %v, want %v", dir, got, want)
		}
	}
}

func TestCommandsQuote(t *testing.T) {
	t.Parallel()
	if got, want := sq(`it's`), `'it'\''s'`; got != want {
		t.Errorf("sq = %s, want %s", got, want)
	}
	cmd := runCommand("m", "/tmp/postrotate-x", []string{"PATH"}, []string{"A=b c"}, []string{"/tmp/postrotate-x/a=b"})
	for _, want := range []string{`cd '/tmp/postrotate-x'`, `${PATH+"PATH=$PATH"}`, `'A=b c'`, `/bin/sh -c 'exec "$@"' sh '/tmp/postrotate-x/a=b'`} {
		if !strings.Contains(cmd, want) {
			t.Errorf("run command %q lacks %q", cmd, want)
		}
	}
	if got := killCommand(1234, 250*time.Millisecond); !strings.Contains(got, "kill -TERM -1234") || !strings.Contains(got, "[ $n -lt 3 ]") {
		t.Errorf("kill command %q", got)
	}
}
