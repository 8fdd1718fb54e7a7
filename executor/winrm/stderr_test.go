package winrm

import (
	"bytes"
	"strings"
	"testing"
)

// CLIXML as Windows PowerShell writes it to a redirected stderr.
const (
	clixmlProgress = `#< CLIXML` + "\r\n" +
		`<Objs Version="1.1.0.1" xmlns="http://schemas.microsoft.com/powershell/2004/04"><Obj S="progress" RefId="0"><TN RefId="0"><T>System.Management.Automation.PSCustomObject</T><T>System.Object</T></TN><MS><I64 N="SourceId">1</I64><PR N="Record"><AV>Preparing modules for first use.</AV><AI>0</AI><Nil /><PI>-1</PI><PC>-1</PC><T>Completed</T><SR>-1</SR><SD> </SD></PR></MS></Obj></Objs>`
	clixmlErrors = `#< CLIXML` + "\r\n" +
		`<Objs Version="1.1.0.1" xmlns="http://schemas.microsoft.com/powershell/2004/04"><Obj S="progress" RefId="0"><TN RefId="0"><T>System.Management.Automation.PSCustomObject</T><T>System.Object</T></TN><MS><I64 N="SourceId">1</I64><PR N="Record"><AV>Preparing modules for first use.</AV><AI>0</AI><Nil /><PI>-1</PI><PC>-1</PC><T>Completed</T><SR>-1</SR><SD> </SD></PR></MS></Obj>` +
		`<S S="Error">Get-Item : Cannot find path 'C:\nope' because it does not exist._x000D__x000A_</S>` +
		`<S S="Error">At line:1 char:1_x000D__x000A_</S>` +
		`<S S="Error">+ Get-Item C:\nope_x000D__x000A_</S>` +
		`<S S="warning">disk almost full</S>` +
		`<S S="verbose">step_x005F_one done</S>` +
		`<S S="Error">    + FullyQualifiedErrorId : PathNotFound,Microsoft.PowerShell.Commands.GetItemCommand_x000D__x000A_</S></Objs>` + "\r\n"
	clixmlErrorsText = "Get-Item : Cannot find path 'C:\\nope' because it does not exist.\r\n" +
		"At line:1 char:1\r\n" +
		"+ Get-Item C:\\nope\r\n" +
		"WARNING: disk almost full\n" +
		"VERBOSE: step_one done\n" +
		"    + FullyQualifiedErrorId : PathNotFound,Microsoft.PowerShell.Commands.GetItemCommand\r\n"
)

const testMarker = "postrotate-0123456789abcdef"

// filterAll runs input through a stderrFilter in writes of chunk bytes (0:
// one write).
func filterAll(input string, chunk int) (out string, f *stderrFilter) {
	var b bytes.Buffer
	f = newStderrFilter(testMarker, &b)
	if chunk <= 0 {
		chunk = len(input) + 1
	}
	for p := []byte(input); len(p) > 0; {
		n := min(chunk, len(p))
		_, _ = f.Write(p[:n])
		p = p[n:]
	}
	f.Flush()
	return b.String(), f
}

func TestStderrFilter(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, in, want string
		ready          bool
		failure        string
	}{
		{"Plain", "line one\nline two\npartial", "line one\nline two\npartial", false, ""},
		{"ProgressOnly", clixmlProgress, "", false, ""},
		{"ProgressThenScript", clixmlProgress + "\r\nscript err\r\n", "script err\r\n", false, ""},
		{"Errors", clixmlErrors, clixmlErrorsText, false, ""},
		{"AroundMarkers", "login noise\n" + testMarker + " ready\r\n" + clixmlErrors + "after\n", "login noise\n" + clixmlErrorsText + "after\n", true, ""},
		{"Failed", testMarker + " failed New-Item : Access is denied.\n", "", false, "New-Item : Access is denied."},
		{"ReadyThenFailed", testMarker + " ready\n" + testMarker + " failed no such file\n", "", true, "no such file"},
		{"BOM", "\xef\xbb\xbf" + testMarker + " ready\n", "", true, ""},
		{"OtherMarkerPasses", "postrotate-ffff ready\n", "postrotate-ffff ready\n", false, ""},
		{"MarkerMidLinePasses", "x " + testMarker + " ready\n", "x " + testMarker + " ready\n", false, ""},
		{"ObjsWithoutHeaderPasses", `<Objs Version="1.1.0.1"><S S="Error">x</S></Objs>` + "\n", `<Objs Version="1.1.0.1"><S S="Error">x</S></Objs>` + "\n", false, ""},
		{"UnterminatedBlockPasses", "#< CLIXML\n<Objs Version=\"1.1.0.1\"><S S=\"Error\">cut", "<Objs Version=\"1.1.0.1\"><S S=\"Error\">cut", false, ""},
		{"MultiLineBlock", "#< CLIXML\n<Objs Version=\"1.1.0.1\">\n<S S=\"Error\">a_x000A_</S>\n</Objs>\nnext\n", "a\nnext\n", false, ""},
		{"BlockThenTextOnSameLine", "#< CLIXML\n<Objs Version=\"1.1.0.1\"><S S=\"Error\">a</S></Objs>tail\n", "a\ntail\n", false, ""},
		{"TwoBlocks", "#< CLIXML\r\n<Objs Version=\"1.1.0.1\"><S S=\"Error\">a</S></Objs>\r\n<Objs Version=\"1.1.0.1\"><S S=\"Error\">b</S></Objs>", "a\nb\n", false, ""},
		{"Surrogates", "#< CLIXML\n<Objs Version=\"1.1.0.1\"><S S=\"Error\">smile _xD83D__xDE00_ _xZZZZ_</S></Objs>\n", "smile \U0001F600 _xZZZZ_\n", false, ""},
		{"Information", "#< CLIXML\n<Objs Version=\"1.1.0.1\"><S S=\"information\">info</S><S S=\"debug\">dbg</S></Objs>\n", "info\nDEBUG: dbg\n", false, ""},
		{"ObjRecord", "#< CLIXML\n<Objs Version=\"1.1.0.1\"><Obj S=\"Error\" RefId=\"0\"><ToString>boom</ToString></Obj></Objs>\n", "boom\n", false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			for _, chunk := range []int{0, 1, 3, 7, 64} {
				got, f := filterAll(tc.in, chunk)
				if got != tc.want {
					t.Errorf("writes of %d: got %q, want %q", chunk, got, tc.want)
				}
				failed, reason := f.Failure()
				if f.Ready() != tc.ready || failed != (tc.failure != "") || reason != tc.failure {
					t.Errorf("writes of %d: ready %v, failure %v %q; want %v %q", chunk, f.Ready(), failed, reason, tc.ready, tc.failure)
				}
			}
		})
	}
}

func TestStderrFilterStreams(t *testing.T) {
	t.Parallel()
	// A long plain line passes through as it comes, without waiting for its end.
	var b bytes.Buffer
	f := newStderrFilter(testMarker, &b)
	_, _ = f.Write([]byte(strings.Repeat("e", 10<<10)))
	if b.Len() != 10<<10 {
		t.Errorf("%d bytes passed before the end of the line, want all", b.Len())
	}
	// A line that may be a status line is held back, within a bound.
	b.Reset()
	f = newStderrFilter(testMarker, &b)
	_, _ = f.Write([]byte(testMarker[:10]))
	if b.Len() != 0 {
		t.Errorf("%q passed: want it held while it may be a marker", b.String())
	}
	_, _ = f.Write([]byte(strings.Repeat("x", maxHeldLine)))
	if b.Len() != 10+maxHeldLine {
		t.Errorf("%d bytes passed, want the held line once it is too long", b.Len())
	}
}

func TestDecodeCLIXML(t *testing.T) {
	t.Parallel()
	for _, bad := range []string{`<Objs><S>`, `<Other/>`, `not xml`} {
		if _, ok := decodeCLIXML([]byte(bad)); ok {
			t.Errorf("decodeCLIXML(%q) is ok", bad)
		}
	}
}

// FuzzStderrFilter checks that the filter never panics and that its output
// does not depend on how the stream is cut into writes.
func FuzzStderrFilter(f *testing.F) {
	for _, s := range []string{clixmlProgress, clixmlErrors, testMarker + " ready\nx\n", "a\r\nb", "#< CLIXML\n<Objs>\n"} {
		f.Add(s, 3)
	}
	f.Fuzz(func(t *testing.T, in string, chunk int) {
		if chunk < 1 || chunk > 1<<10 {
			chunk = 1
		}
		whole, f1 := filterAll(in, 0)
		cut, f2 := filterAll(in, chunk)
		if whole != cut || f1.Ready() != f2.Ready() {
			t.Errorf("one write: %q (ready %v); writes of %d: %q (ready %v)", whole, f1.Ready(), chunk, cut, f2.Ready())
		}
	})
}
