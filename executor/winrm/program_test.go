package winrm

import (
	"encoding/base64"
	"encoding/json"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/postrotate/postrotate/executor"
)

// The PowerShell program cannot run here: these tests check its text. What
// they establish: the command line is fixed and holds no script and no
// secret; the payload and every form of a secret appear only in the last
// stdin line, as data; the script and the bootstrap are written; the child
// process gets the interpreter command line of executor.Argv and the
// environment; the exit status of the child is the program's.

// psLine matches a program line that sets a value through Get-PostrotateText.
func psValue(t *testing.T, program, prefix string) string {
	t.Helper()
	re := regexp.MustCompile(regexp.QuoteMeta(prefix) + ` \(Get-PostrotateText '([A-Za-z0-9+/=]*)'\)`)
	m := re.FindStringSubmatch(program)
	if m == nil {
		t.Fatalf("no %q line in the program", prefix)
	}
	b, err := base64.StdEncoding.DecodeString(m[1])
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// splitPowerShell splits a PowerShell stdin into the loader, the program,
// and the payload line, checking the framing.
func splitPowerShell(t *testing.T, p program) (loader, prog, payloadLine string) {
	t.Helper()
	stdin := string(p.stdin)
	if !strings.HasSuffix(stdin, "\n") {
		t.Fatal("stdin does not end with a line ending")
	}
	lines := strings.Split(strings.TrimSuffix(stdin, "\n"), "\n")
	if len(lines) < 4 {
		t.Fatalf("stdin has %d lines", len(lines))
	}
	if end := lines[len(lines)-2]; end != "#"+p.marker {
		t.Fatalf("end line %q, want #marker", end)
	}
	var b strings.Builder
	for _, l := range lines[1 : len(lines)-2] {
		if !strings.HasPrefix(l, "#") {
			t.Fatalf("program line %q is not prefixed by #", l)
		}
		b.WriteString(l[1:] + "\n")
	}
	return lines[0], b.String(), lines[len(lines)-1]
}

// psArgs are the arguments of powershell.exe before what it runs.
const psArgs = "-NoLogo -NoProfile -NonInteractive -ExecutionPolicy Bypass"

// The secret and the script of TestPowerShellProgram's job.
const (
	psSecret = `S3cret-N3w/P@ss+"é"`
	psScript = "param([Parameter(ValueFromPipeline=$true)]$Record)\nProcess { $Record }\n"
)

// psProgram is the PowerShell program of TestPowerShellProgram's job, and
// its stdin split.
type psProgram struct {
	job                       executor.Job
	payload                   string // the payload line, without its line ending
	p                         program
	loader, prog, payloadLine string
}

func TestPowerShellProgram(t *testing.T) {
	t.Parallel()
	js, _ := json.Marshal(map[string]string{"newPassword": psSecret, "oldPassword": "0ld-Secret"})
	c := &psProgram{payload: base64.StdEncoding.EncodeToString(js)}
	c.job = executor.Job{
		RotationID: "rot-'quoted'", Step: 2, Attempt: 3,
		Script:  executor.Script{Name: "rotate.ps1", Content: []byte(psScript)},
		Stdin:   []byte(c.payload + "\n"),
		Secrets: []string{psSecret, "0ld-Secret"},
		Target:  &executor.Target{Host: "win", Login: "admin", Password: "Adm1n-Secret"},
	}
	var err error
	c.p, err = New(Options{}).program(c.job)
	if err != nil {
		t.Fatal(err)
	}
	if want := "powershell.exe " + psArgs + " -Command -"; c.p.command != want {
		t.Errorf("command %q, want %q", c.p.command, want)
	}
	if want := `powershell.exe ` + psArgs + ` -File .\postrotate-bootstrap.ps1 .\rotate.ps1`; c.p.display != want {
		t.Errorf("display %q, want %q", c.p.display, want)
	}
	c.loader, c.prog, c.payloadLine = splitPowerShell(t, c.p)
	for _, tc := range []struct {
		name string
		fn   func(*testing.T, *psProgram)
	}{
		{"PayloadOnlyAsData", testPSPayloadOnlyAsData},
		{"Loader", testPSLoader},
		{"WritesScriptAndBootstrap", testPSWritesScriptAndBootstrap},
		{"Child", testPSChild},
		{"ExitStatus", testPSExitStatus},
		{"Brackets", testPSBrackets},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, c) })
	}
}

func testPSPayloadOnlyAsData(t *testing.T, c *psProgram) {
	if want := "#" + base64.StdEncoding.EncodeToString(c.job.Stdin); c.payloadLine != want {
		t.Errorf("payload line %q, want %q", c.payloadLine, want)
	}
	jsonEscaped, _ := json.Marshal(psSecret)
	forms := map[string]string{
		"raw": psSecret, "base64": base64.StdEncoding.EncodeToString([]byte(psSecret)),
		"url": url.QueryEscape(psSecret), "json": strings.Trim(string(jsonEscaped), `"`),
		"payload": c.payload, "old": "0ld-Secret", "target password": "Adm1n-Secret",
	}
	for name, form := range forms {
		for what, text := range map[string]string{"command line": c.p.command, "display": c.p.display, "loader": c.loader, "program": c.prog} {
			if strings.Contains(text, form) {
				t.Errorf("the %s holds the %s form of a secret", what, name)
			}
		}
	}
	if !strings.Contains(c.prog, "$line = [Console]::In.ReadLine()") ||
		!strings.Contains(c.prog, "$child.StandardInput.BaseStream.Write($payload, 0, $payload.Length)") {
		t.Error("the program does not read the payload line from stdin and write it to the child's stdin")
	}
}

func testPSLoader(t *testing.T, c *psProgram) {
	for _, want := range []string{"[Console]::In.ReadLine()", "'#" + c.p.marker + "'", "[scriptblock]::Create("} {
		if !strings.Contains(c.loader, want) {
			t.Errorf("loader %q lacks %q", c.loader, want)
		}
	}
	if strings.Count(c.loader, "{") != strings.Count(c.loader, "}") || strings.Count(c.loader, "(") != strings.Count(c.loader, ")") {
		t.Errorf("loader %q: unbalanced brackets", c.loader)
	}
}

func testPSWritesScriptAndBootstrap(t *testing.T, c *psProgram) {
	wantScript := "[System.IO.File]::WriteAllBytes((Join-Path $dir (Get-PostrotateText '" +
		base64.StdEncoding.EncodeToString([]byte("rotate.ps1")) + "')), [System.Convert]::FromBase64String('" +
		base64.StdEncoding.EncodeToString([]byte(psScript)) + "'))"
	wantBootstrap := "[System.IO.File]::WriteAllBytes((Join-Path $dir '" + executor.BootstrapName +
		"'), [System.Convert]::FromBase64String('" + base64.StdEncoding.EncodeToString([]byte(executor.PowerShellBootstrap)) + "'))"
	for name, want := range map[string]string{"script": wantScript, "bootstrap": wantBootstrap} {
		if !strings.Contains(c.prog, want) {
			t.Errorf("the program does not write the %s", name)
		}
	}
	if !strings.Contains(c.prog, "$path = Join-Path ([System.IO.Path]::GetTempPath()) '"+c.p.dirName+"'") ||
		!strings.Contains(c.prog, "$acl.SetAccessRuleProtection($true, $false)") {
		t.Error("the program does not create a private run directory in the temp directory")
	}
}

func testPSChild(t *testing.T, c *psProgram) {
	if got := psValue(t, c.prog, "$start.FileName ="); got != "powershell.exe" {
		t.Errorf("child %q, want powershell.exe", got)
	}
	if got, want := psValue(t, c.prog, "$start.Arguments ="), psArgs+` -File .\postrotate-bootstrap.ps1 .\rotate.ps1`; got != want {
		t.Errorf("child arguments %q, want %q", got, want)
	}
	if got := psValue(t, c.prog, "$start.EnvironmentVariables['POSTROTATE_ROTATION_ID'] ="); got != "rot-'quoted'" {
		t.Errorf("POSTROTATE_ROTATION_ID %q", got)
	}
	if got := psValue(t, c.prog, "$start.EnvironmentVariables['POSTROTATE_STEP'] ="); got != "2" {
		t.Errorf("POSTROTATE_STEP %q", got)
	}
	for _, want := range []string{"$start.RedirectStandardInput = $true", "$start.UseShellExecute = $false", "$start.WorkingDirectory = $dir", "'SYSTEMROOT'"} {
		if !strings.Contains(c.prog, want) {
			t.Errorf("the program lacks %q", want)
		}
	}
	if strings.Contains(c.prog, "RedirectStandardOutput") || strings.Contains(c.prog, "RedirectStandardError") {
		t.Error("the child's stdout and stderr must be inherited, not redirected")
	}
}

func testPSExitStatus(t *testing.T, c *psProgram) {
	order := []string{
		"$code = 125",
		"[Console]::Error.WriteLine($marker + ' ready')",
		"$child = [System.Diagnostics.Process]::Start($start)",
		"[Console]::Error.WriteLine($marker + ' failed '",
		"$child.WaitForExit()",
		"$code = $child.ExitCode",
		"} finally {",
		"Remove-Item -LiteralPath $dir -Recurse -Force",
		"[Environment]::Exit($code)",
	}
	at := 0
	for _, want := range order {
		i := strings.Index(c.prog[at:], want)
		if i < 0 {
			t.Fatalf("the program lacks %q after byte %d", want, at)
		}
		at += i + len(want)
	}
}

func testPSBrackets(t *testing.T, c *psProgram) {
	for _, pair := range []string{"{}", "()", "[]"} {
		if o, c := strings.Count(c.prog, pair[:1]), strings.Count(c.prog, pair[1:]); o != c {
			t.Errorf("%d %q but %d %q", o, pair[:1], c, pair[1:])
		}
	}
}

func TestPowerShellProgramInterpreters(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name      string
		script    executor.Script
		display   string
		bootstrap bool
	}{
		{"Batch", executor.Script{Name: "restart.bat", Content: []byte("@echo off\r\n")}, `cmd.exe /d /c .\restart.bat`, false},
		{"Python", executor.Script{Name: "notify.py", Content: []byte("#!/usr/bin/env python3\n")}, `python .\notify.py`, false},
		{"Command", executor.Script{Name: "rotate.ps1", Command: "pwsh"}, `pwsh -NoLogo -NoProfile -NonInteractive -ExecutionPolicy Bypass -File .\postrotate-bootstrap.ps1 .\rotate.ps1`, true},
		{"NoExtension", executor.Script{Name: "tool", Command: "node"}, `node .\tool`, false},
		{"OddName", executor.Script{Name: `dir\a&b %x%.cmd`}, `cmd.exe /d /c ".\a_b _x_.cmd"`, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p, err := New(Options{}).program(executor.Job{Script: tc.script, Stdin: []byte("eA==\n")})
			if err != nil {
				t.Fatal(err)
			}
			if p.display != tc.display {
				t.Errorf("display %q, want %q", p.display, tc.display)
			}
			_, prog, _ := splitPowerShell(t, p)
			if got := strings.Contains(prog, executor.BootstrapName); got != tc.bootstrap {
				t.Errorf("bootstrap written: %v, want %v", got, tc.bootstrap)
			}
		})
	}
	if _, err := New(Options{}).program(executor.Job{Script: executor.Script{Name: executor.BootstrapName}}); err == nil {
		t.Error("a script named like the bootstrap is accepted")
	}
}

func TestWindowsQuote(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		`plain`:          `plain`,
		``:               `""`,
		`.\a b.ps1`:      `".\a b.ps1"`,
		`say "hi"`:       `"say \"hi\""`,
		`trailing\ dir\`: `"trailing\ dir\\"`,
		`a\"b c`:         `"a\\\"b c"`,
	} {
		if got := windowsQuote(in); got != want {
			t.Errorf("windowsQuote(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestCleanupProgram(t *testing.T) {
	t.Parallel()
	p := program{dirName: "postrotate-0123"}
	cmd, stdin := New(Options{}).cleanupProgram(p)
	if !strings.HasSuffix(cmd, " -Command -") || string(stdin) != "Remove-Item -LiteralPath (Join-Path ([System.IO.Path]::GetTempPath()) 'postrotate-0123') -Recurse -Force -ErrorAction SilentlyContinue\n" {
		t.Errorf("PowerShell cleanup %q, %q", cmd, stdin)
	}
	cmd, stdin = New(Options{Shell: ShellPOSIX, TempDir: "/var/tmp"}).cleanupProgram(p)
	if cmd != "/bin/sh -s" || string(stdin) != "rm -rf -- '/var/tmp'/'postrotate-0123'\n" {
		t.Errorf("POSIX cleanup %q, %q", cmd, stdin)
	}
}
