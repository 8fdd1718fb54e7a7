package executor_test

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/postrotate/postrotate/executor"
)

func TestArgv(t *testing.T) {
	t.Parallel()
	ps := append([]string{}, executor.PowerShellArgs...)
	for _, tc := range []struct {
		name   string
		script executor.Script
		path   string
		opts   executor.Interpreters
		want   []string
	}{
		{"Shebang", executor.Script{Name: "a.py", Content: []byte("#!/usr/bin/env bash\n")}, "/d/a.py", executor.Interpreters{}, []string{"/d/a.py"}},
		{"Python", executor.Script{Name: "a.py", Content: []byte("print()")}, "/d/a.py", executor.Interpreters{}, []string{"python3", "/d/a.py"}},
		{"PythonConfigured", executor.Script{Name: "a.Py"}, "/d/a.Py", executor.Interpreters{Python: "/usr/bin/python3 -I"}, []string{"/usr/bin/python3", "-I", "/d/a.Py"}},
		{"Shell", executor.Script{Name: "a.sh"}, "/d/a.sh", executor.Interpreters{}, []string{"/bin/sh", "/d/a.sh"}},
		{"ShellNoName", executor.Script{}, "/d/script", executor.Interpreters{Shell: "/bin/bash"}, []string{"/bin/bash", "/d/script"}},
		{"Command", executor.Script{Name: "a.sh", Command: " /usr/bin/env  python3 -u ", Content: []byte("#!/bin/sh")}, "/d/a.sh", executor.Interpreters{}, []string{"/usr/bin/env", "python3", "-u", "/d/a.sh"}},
		{"BlankCommand", executor.Script{Name: "a.sh", Command: "  "}, "/d/a.sh", executor.Interpreters{}, []string{"/bin/sh", "/d/a.sh"}},
		{"PowerShell", executor.Script{Name: "a.ps1"}, "/d/a.ps1", executor.Interpreters{},
			slices.Concat([]string{"pwsh"}, ps, []string{"/d/" + executor.BootstrapName, "/d/a.ps1"})},
		{"PowerShellWindowsPath", executor.Script{Name: "A.PS1", Content: []byte("#!/usr/bin/env pwsh\n")}, `C:\t\A.PS1`, executor.Interpreters{PowerShell: "powershell.exe"},
			slices.Concat([]string{"powershell.exe"}, ps, []string{`C:\t\` + executor.BootstrapName, `C:\t\A.PS1`})},
		{"PowerShellCommand", executor.Script{Name: "a.ps1", Command: "pwsh-preview"}, "/d/a.ps1", executor.Interpreters{},
			slices.Concat([]string{"pwsh-preview"}, ps, []string{"/d/" + executor.BootstrapName, "/d/a.ps1"})},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := executor.Argv(tc.script, tc.path, tc.opts)
			if err != nil || !slices.Equal(got, tc.want) {
				t.Errorf("Argv = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

func TestArgvReservedName(t *testing.T) {
	t.Parallel()
	_, err := executor.Argv(executor.Script{Name: executor.BootstrapName}, "/d/"+executor.BootstrapName, executor.Interpreters{})
	if !errors.Is(err, executor.ErrBootstrapName) {
		t.Errorf("err = %v, want ErrBootstrapName", err)
	}
}

// pwsh is not installed on the development machines, so the bootstrap is
// checked as text here; running it is for a Windows or pwsh host.
func TestPowerShellBootstrap(t *testing.T) {
	t.Parallel()
	b := executor.PowerShellBootstrap
	for _, want := range []string{
		"[Console]::In.ReadLine()", // one line from stdin
		"$line | & $Script",        // piped as a pipeline object
		"$ok = $?",
		"if ($ok) { exit 0 }",
		"exit $global:LASTEXITCODE",
		"exit 1",
	} {
		if !strings.Contains(b, want) {
			t.Errorf("bootstrap lacks %q", want)
		}
	}
	for _, banned := range []string{"EncodedCommand", "-Command", "Invoke-Expression"} {
		if strings.Contains(b, banned) || slices.Contains(executor.PowerShellArgs, banned) {
			t.Errorf("bootstrap or its arguments use %q", banned)
		}
	}
	if strings.IndexFunc(b, func(r rune) bool { return r > 127 }) >= 0 {
		t.Error("bootstrap is not ASCII: its encoding would depend on the PowerShell version")
	}
	if want := []string{"-NoLogo", "-NoProfile", "-NonInteractive", "-ExecutionPolicy", "Bypass", "-File"}; !slices.Equal(executor.PowerShellArgs, want) {
		t.Errorf("PowerShellArgs = %q, want %q", executor.PowerShellArgs, want)
	}
}

func TestScriptFileName(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"notify.sh": "notify.sh", "dir/notify.sh": "notify.sh", `C:\x\a.ps1`: "a.ps1",
		"../../etc/passwd": "passwd", "": "script", ".": "script", "..": "script", "dir/": "script",
	} {
		if got := executor.ScriptFileName(in); got != want {
			t.Errorf("ScriptFileName(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestSystem(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{"linux": "Linux", "windows": "Windows", "darwin": "Darwin", "freebsd": "FreeBSD", "plan9": "Plan9"} {
		if got := executor.System(in); got != want {
			t.Errorf("System(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestJobDefaults(t *testing.T) {
	t.Parallel()
	var j executor.Job
	if j.EffectiveTimeout() != executor.DefaultTimeout || j.EffectiveOutputLimit() != executor.DefaultOutputLimit {
		t.Errorf("defaults %v, %d", j.EffectiveTimeout(), j.EffectiveOutputLimit())
	}
	if (executor.Result{ExitCode: 0, Error: "timed out"}).Success() || !(executor.Result{}).Success() {
		t.Error("Success is wrong")
	}
}
