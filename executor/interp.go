package executor

import (
	"bytes"
	"errors"
	"fmt"
	"path"
	"strings"
)

// Interpreters names the programs that run scripts which neither have a
// Command nor start with a shebang. A zero field means its default.
type Interpreters struct {
	// Shell runs scripts without a known extension. Defaults to "/bin/sh".
	Shell string
	// Python runs .py scripts. Defaults to "python3".
	Python string
	// PowerShell runs .ps1 scripts through the bootstrap. Defaults to "pwsh".
	PowerShell string
}

// withDefaults returns i with its zero fields set to their defaults.
func (i Interpreters) withDefaults() Interpreters {
	if i.Shell == "" {
		i.Shell = "/bin/sh"
	}
	if i.Python == "" {
		i.Python = "python3"
	}
	if i.PowerShell == "" {
		i.PowerShell = "pwsh"
	}
	return i
}

// BootstrapName is the file name of the PowerShell bootstrap, written next to
// a .ps1 script.
const BootstrapName = "postrotate-bootstrap.ps1"

// PowerShellBootstrap is the content of the bootstrap that runs a .ps1 script
// the way Keeper's gateway does ("B64" | .\script.ps1) without the payload
// ever appearing on a command line: it reads one line from stdin and pipes
// it to the script (its only argument) as a pipeline object. It exits 0 when
// $? is True after the script, otherwise with the script's $LASTEXITCODE when
// that is set and non-zero, otherwise 1.
const PowerShellBootstrap = `# postrotate bootstrap: pipes the payload line from stdin to the script.
param([Parameter(Mandatory = $true, Position = 0)][string]$Script)
if (-not [System.IO.Path]::IsPathRooted($Script)) { $Script = Join-Path (Get-Location).ProviderPath $Script }
$line = [Console]::In.ReadLine()
$global:LASTEXITCODE = $null
$line | & $Script
$ok = $?
if ($ok) { exit 0 }
if ($null -ne $global:LASTEXITCODE -and $global:LASTEXITCODE -ne 0) { exit $global:LASTEXITCODE }
exit 1
`

// PowerShellArgs are the arguments given to PowerShell before the bootstrap
// path: no logo, no profile, no prompt, no execution policy in the way.
var PowerShellArgs = []string{"-NoLogo", "-NoProfile", "-NonInteractive", "-ExecutionPolicy", "Bypass", "-File"}

// ErrBootstrapName is returned by [Argv] for a .ps1 script named like the
// bootstrap, which would overwrite it.
var ErrBootstrapName = errors.New("script name " + BootstrapName + " is reserved")

// ScriptFileName returns the file name a script is written to: the base name
// of name, whichever of / and \ separates its elements, or "script" when
// that is empty, "." or "..".
func ScriptFileName(name string) string {
	if i := strings.LastIndexAny(name, `/\`); i >= 0 {
		name = name[i+1:]
	}
	switch name {
	case "", ".", "..":
		return "script"
	}
	return name
}

// UsesBootstrap reports whether s runs through the PowerShell bootstrap:
// every .ps1 script does, so that it gets the payload as a pipeline object.
func UsesBootstrap(s Script) bool {
	return strings.EqualFold(path.Ext(ScriptFileName(s.Name)), ".ps1")
}

// BootstrapPath returns where the bootstrap goes for a script at scriptPath:
// in the same directory, using the separator scriptPath uses.
func BootstrapPath(scriptPath string) string {
	i := strings.LastIndexAny(scriptPath, `/\`)
	return scriptPath[:i+1] + BootstrapName
}

// Argv returns the command line that runs script s, already written at
// scriptPath, following the script contract:
//
//   - a .ps1 script runs through the bootstrap (see [PowerShellBootstrap],
//     which the caller writes at [BootstrapPath]): PowerShell (s.Command when
//     set, else opts.PowerShell) with [PowerShellArgs], the bootstrap, then
//     scriptPath — whether or not it has a shebang;
//   - otherwise a non-empty Command's fields are prefixed to scriptPath;
//   - otherwise a script starting with "#!" runs by itself (it must be
//     executable: mode 0700);
//   - otherwise .py runs with opts.Python, anything else with opts.Shell.
//
// The payload is never part of the command line.
func Argv(s Script, scriptPath string, opts Interpreters) ([]string, error) {
	opts = opts.withDefaults()
	command := strings.Fields(s.Command)
	if UsesBootstrap(s) {
		if strings.EqualFold(ScriptFileName(s.Name), BootstrapName) {
			return nil, ErrBootstrapName
		}
		exe := []string{opts.PowerShell}
		if len(command) > 0 {
			exe = command
		}
		argv := append(append(exe[:len(exe):len(exe)], PowerShellArgs...), BootstrapPath(scriptPath), scriptPath)
		return argv, nil
	}
	if len(command) > 0 {
		return append(command, scriptPath), nil
	}
	if bytes.HasPrefix(s.Content, []byte("#!")) {
		return []string{scriptPath}, nil
	}
	switch strings.ToLower(path.Ext(ScriptFileName(s.Name))) {
	case ".py":
		return interpreter(opts.Python, scriptPath)
	default:
		return interpreter(opts.Shell, scriptPath)
	}
}

// interpreter splits a configured interpreter (which may carry arguments)
// and appends the script.
func interpreter(configured, scriptPath string) ([]string, error) {
	f := strings.Fields(configured)
	if len(f) == 0 {
		return nil, fmt.Errorf("empty interpreter %q", configured)
	}
	return append(f, scriptPath), nil
}
