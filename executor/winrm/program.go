package winrm

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"unicode"

	"github.com/postrotate/postrotate/executor"
)

// program is what one job sends to the target: a command line that holds
// neither the script nor a secret, and the stdin that carries both.
type program struct {
	// command is the WinRM command line: PowerShell or /bin/sh reading
	// their program from stdin.
	command string
	// stdin is the program, then the payload line as data (see
	// powerShellProgram and posixProgram).
	stdin []byte
	// display is Result.Command: the interpreter and the script, relative
	// to the run directory.
	display string
	// marker starts the status lines the program writes on stderr.
	marker string
	// dirName is the base name of the run directory.
	dirName string
}

// randomToken returns n random bytes in hex.
func randomToken(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// program builds the remote program of a job.
func (w *WinRM) program(job executor.Job) (program, error) {
	p := program{
		marker:  "postrotate-" + randomToken(12),
		dirName: "postrotate-" + randomToken(8),
	}
	env := [][2]string{
		{"POSTROTATE_ROTATION_ID", job.RotationID},
		{"POSTROTATE_STEP", strconv.Itoa(job.Step)},
		{"POSTROTATE_ATTEMPT", strconv.Itoa(job.Attempt)},
	}
	if w.opts.Shell == ShellPOSIX {
		name := executor.ScriptFileName(job.Script.Name)
		argv, err := executor.Argv(job.Script, "./"+name, w.opts.Interpreters)
		if err != nil {
			return program{}, err
		}
		p.command = "/bin/sh -s"
		p.display = strings.Join(argv, " ")
		p.stdin = posixProgram(posixSpec{
			marker: p.marker, parent: w.opts.TempDir, dirName: p.dirName,
			name: name, content: job.Script.Content, bootstrap: executor.UsesBootstrap(job.Script),
			argv: argv, inherit: w.opts.InheritEnv, env: env, stdin: job.Stdin,
		})
		return p, nil
	}
	name := windowsFileName(job.Script.Name)
	// Windows has no shebangs: the content does not choose the interpreter.
	argv, err := executor.Argv(executor.Script{Name: name, Command: job.Script.Command}, `.\`+name, w.opts.Interpreters)
	if err != nil {
		return program{}, err
	}
	p.command = w.powerShellCommand()
	p.display = windowsCommandLine(argv)
	p.stdin = powerShellProgram(powerShellSpec{
		marker: p.marker, parent: w.opts.TempDir, dirName: p.dirName,
		name: name, content: job.Script.Content, bootstrap: executor.UsesBootstrap(job.Script),
		exe: argv[0], args: windowsCommandLine(argv[1:]), inherit: w.opts.InheritEnv, env: env,
		stdin: job.Stdin,
	})
	return p, nil
}

// powerShellCommand is the command line of PowerShell reading its commands
// from stdin.
func (w *WinRM) powerShellCommand() string {
	exe := strings.Fields(w.opts.Interpreters.PowerShell)
	return strings.Join(append(exe[:1:1], "-NoLogo", "-NoProfile", "-NonInteractive", "-ExecutionPolicy", "Bypass", "-Command", "-"), " ")
}

// cleanupProgram returns the command line and stdin that remove a run
// directory left behind.
func (w *WinRM) cleanupProgram(p program) (string, []byte) {
	if w.opts.Shell == ShellPOSIX {
		return "/bin/sh -s", []byte("rm -rf -- " + posixParent(w.opts.TempDir) + "/" + sq(p.dirName) + "\n")
	}
	return w.powerShellCommand(), []byte("Remove-Item -LiteralPath (Join-Path " + psParent(w.opts.TempDir) + " " + psq(p.dirName) +
		") -Recurse -Force -ErrorAction SilentlyContinue\n")
}

// windowsFileName returns the file name a script is written to on Windows:
// [executor.ScriptFileName] with every character cmd.exe or a command line
// could take for syntax replaced by "_", and without the trailing dots and
// spaces Windows drops.
func windowsFileName(name string) string {
	name = strings.Map(func(r rune) rune {
		switch {
		case r == '.' || r == '-' || r == '_' || r == ' ':
			return r
		case r < 0x80 && (unicode.IsLetter(r) || unicode.IsDigit(r)):
			return r
		case r >= 0x80 && (unicode.IsLetter(r) || unicode.IsDigit(r)):
			return r
		}
		return '_'
	}, executor.ScriptFileName(name))
	name = strings.TrimRight(name, ". ")
	if name == "" {
		return "script"
	}
	return name
}

// windowsCommandLine joins arguments into a command line that
// CommandLineToArgvW and the C runtime split back into the same arguments.
func windowsCommandLine(args []string) string {
	quoted := make([]string, len(args))
	for i, a := range args {
		quoted[i] = windowsQuote(a)
	}
	return strings.Join(quoted, " ")
}

// windowsQuote quotes one argument for windowsCommandLine.
func windowsQuote(s string) string {
	if s != "" && !strings.ContainsAny(s, " \t\n\v\"") {
		return s
	}
	var b strings.Builder
	b.WriteByte('"')
	slashes := 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '\\':
			slashes++
		case '"':
			b.WriteString(strings.Repeat(`\`, slashes+1)) // double them, escape the quote
			slashes = 0
		default:
			slashes = 0
		}
		b.WriteByte(s[i])
	}
	b.WriteString(strings.Repeat(`\`, slashes)) // before the closing quote
	b.WriteByte('"')
	return b.String()
}

// psq quotes s as a PowerShell single-quoted string. Only for ASCII text
// without quotes of any kind: everything else goes through psText.
func psq(s string) string { return "'" + s + "'" }

// psText is a PowerShell expression for the UTF-8 text s, base64 encoded so
// that no quoting rule applies.
func psText(s string) string {
	return "(Get-PostrotateText '" + base64.StdEncoding.EncodeToString([]byte(s)) + "')"
}

// psParent is a PowerShell expression for the parent of run directories.
func psParent(tempDir string) string {
	if tempDir == "" {
		return "([System.IO.Path]::GetTempPath())"
	}
	return "([System.Text.Encoding]::UTF8.GetString([System.Convert]::FromBase64String('" +
		base64.StdEncoding.EncodeToString([]byte(tempDir)) + "')))"
}

// powerShellSpec is what powerShellProgram needs.
type powerShellSpec struct {
	marker, parent, dirName string
	name                    string // the script's file name
	content                 []byte
	bootstrap               bool
	exe, args               string // the process that runs the script
	inherit                 []string
	env                     [][2]string
	stdin                   []byte
}

// psLoader is the first line PowerShell reads and runs: it reads the lines
// that follow, each prefixed by "#" so that they would be inert comments if
// PowerShell ever read them as commands, up to the end line ("#" and the
// marker), and runs them as one script block. Only that way does a
// multi-line program run whole: -Command - runs each line as it comes.
const psLoader = `$ErrorActionPreference = 'Stop'; $postrotateProgram = New-Object System.Text.StringBuilder; ` +
	`while ($true) { $postrotateLine = [Console]::In.ReadLine(); ` +
	`if ($null -eq $postrotateLine) { [Console]::Error.WriteLine('%[1]s failed program truncated'); [Environment]::Exit(125) }; ` +
	`if ($postrotateLine -ceq '#%[1]s') { break }; ` +
	`[void]$postrotateProgram.Append($postrotateLine.Substring(1)).Append("` + "`n" + `") }; ` +
	`$postrotateLine = $null; & ([scriptblock]::Create($postrotateProgram.ToString()))`

// powerShellProgram returns the stdin of PowerShell reading its commands
// from stdin ("-Command -"): the loader line (psLoader), the program, the
// end line, then the payload line as data: "#" and the base64 of
// Job.Stdin, which the program reads with [Console]::In.ReadLine() — it is
// never part of any script text PowerShell parses, logs or shows.
//
// The program creates the run directory under the parent (the login's
// temporary directory by default), restricted to the login and SYSTEM;
// writes the script, and the bootstrap for a .ps1; reads the payload line;
// starts the interpreter with System.Diagnostics.Process — its command line
// holds the interpreter, the bootstrap and the script, relative to the run
// directory, its working directory — with a minimal environment, its stdin
// redirected and its stdout and stderr inherited; writes the payload bytes
// to its stdin and closes it; waits for it; removes the directory; and
// exits with its exit status. It writes "<marker> ready" on stderr before
// it starts the interpreter, "<marker> failed <reason>" when it cannot
// (then exits 125).
func powerShellProgram(s powerShellSpec) []byte {
	var prog strings.Builder
	line := func(format string, args ...any) { fmt.Fprintf(&prog, format+"\n", args...) }
	line(`$ErrorActionPreference = 'Stop'`)
	line(`$ProgressPreference = 'SilentlyContinue'`)
	line(`function Get-PostrotateText([string]$Base64) { [System.Text.Encoding]::UTF8.GetString([System.Convert]::FromBase64String($Base64)) }`)
	line(`$marker = %s`, psq(s.marker))
	line(`$code = 125`)
	line(`$dir = $null`)
	line(`try {`)
	line(`    try {`)
	line(`        $path = Join-Path %s %s`, psParent(s.parent), psq(s.dirName))
	line(`        $null = New-Item -ItemType Directory -Path $path`)
	line(`        $dir = $path`)
	line(`        $acl = New-Object System.Security.AccessControl.DirectorySecurity`)
	line(`        $acl.SetAccessRuleProtection($true, $false)`)
	line(`        foreach ($sid in @([System.Security.Principal.WindowsIdentity]::GetCurrent().User, (New-Object System.Security.Principal.SecurityIdentifier 'S-1-5-18'))) {`)
	line(`            $acl.AddAccessRule((New-Object System.Security.AccessControl.FileSystemAccessRule($sid, 'FullControl', 'ContainerInherit, ObjectInherit', 'None', 'Allow')))`)
	line(`        }`)
	line(`        Set-Acl -LiteralPath $dir -AclObject $acl`)
	line(`        [System.IO.File]::WriteAllBytes((Join-Path $dir %s), [System.Convert]::FromBase64String('%s'))`,
		psText(s.name), base64.StdEncoding.EncodeToString(s.content))
	if s.bootstrap {
		line(`        [System.IO.File]::WriteAllBytes((Join-Path $dir %s), [System.Convert]::FromBase64String('%s'))`,
			psq(executor.BootstrapName), base64.StdEncoding.EncodeToString([]byte(executor.PowerShellBootstrap)))
	}
	line(`        $start = New-Object System.Diagnostics.ProcessStartInfo`)
	line(`        $start.FileName = %s`, psText(s.exe))
	line(`        $start.Arguments = %s`, psText(s.args))
	line(`        $start.WorkingDirectory = $dir`)
	line(`        $start.UseShellExecute = $false`)
	line(`        $start.RedirectStandardInput = $true`)
	keep := make([]string, len(s.inherit))
	for i, name := range s.inherit {
		keep[i] = psq(name)
	}
	line(`        $keep = @(%s)`, strings.Join(keep, ", "))
	line(`        foreach ($name in @($start.EnvironmentVariables.Keys)) { if ($keep -notcontains $name) { $start.EnvironmentVariables.Remove($name) } }`)
	for _, kv := range s.env {
		line(`        $start.EnvironmentVariables[%s] = %s`, psq(kv[0]), psText(kv[1]))
	}
	line(`        $start.EnvironmentVariables['TEMP'] = $dir`)
	line(`        $start.EnvironmentVariables['TMP'] = $dir`)
	line(`        $line = [Console]::In.ReadLine()`)
	line(`        if ($null -eq $line -or -not $line.StartsWith('#')) { throw 'no payload line on stdin' }`)
	line(`        $payload = [System.Convert]::FromBase64String($line.Substring(1))`)
	line(`        $line = $null`)
	// Stdin is read to its end: Console.In may now be reset. .NET Framework
	// writes a byte order mark first on a child's redirected stdin when the
	// console input encoding has one (UTF-8 under WINRS_CODEPAGE 65001).
	line(`        try { [Console]::InputEncoding = New-Object System.Text.UTF8Encoding($false) } catch { }`)
	line(`        [Console]::Error.WriteLine($marker + ' ready')`)
	line(`        $child = [System.Diagnostics.Process]::Start($start)`)
	line(`    } catch {`)
	line(`        [Console]::Error.WriteLine($marker + ' failed ' + ($_.Exception.Message -replace '\s+', ' '))`)
	line(`        return`)
	line(`    }`)
	line(`    try {`)
	line(`        $child.StandardInput.BaseStream.Write($payload, 0, $payload.Length)`)
	line(`        $child.StandardInput.Close()`)
	line(`    } catch {`)
	line(`        # The script need not read its stdin.`)
	line(`    }`)
	line(`    $payload = $null`)
	line(`    $child.WaitForExit()`)
	line(`    $code = $child.ExitCode`)
	line(`} finally {`)
	line(`    if ($null -ne $dir) { Remove-Item -LiteralPath $dir -Recurse -Force -ErrorAction SilentlyContinue }`)
	line(`    [Environment]::Exit($code)`)
	line(`}`)

	var b strings.Builder
	fmt.Fprintf(&b, psLoader+"\n", s.marker)
	for _, l := range strings.Split(strings.TrimSuffix(prog.String(), "\n"), "\n") {
		b.WriteString("#" + l + "\n")
	}
	b.WriteString("#" + s.marker + "\n")
	b.WriteString("#" + base64.StdEncoding.EncodeToString(s.stdin) + "\n")
	return []byte(b.String())
}

// posixSpec is what posixProgram needs.
type posixSpec struct {
	marker, parent, dirName string
	name                    string
	content                 []byte
	bootstrap               bool
	argv                    []string
	inherit                 []string
	env                     [][2]string
	stdin                   []byte
}

// sq quotes s for a POSIX shell.
func sq(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// posixParent is a shell word for the parent of run directories.
func posixParent(tempDir string) string {
	if tempDir == "" {
		return `"${TMPDIR:-/tmp}"`
	}
	return sq(tempDir)
}

// wrap64 returns the base64 of b in lines of 76 characters.
func wrap64(b []byte) string {
	s := base64.StdEncoding.EncodeToString(b)
	var out strings.Builder
	for len(s) > 76 {
		out.WriteString(s[:76] + "\n")
		s = s[76:]
	}
	out.WriteString(s + "\n")
	return out.String()
}

// posixProgram returns the stdin of /bin/sh -s: the same steps as
// powerShellProgram, in POSIX sh. The script and the payload are here
// documents, which /bin/sh takes as data: the payload line ("#" and the
// base64 of Job.Stdin) reaches the script's stdin through tail, base64 -d
// and env -i, never a command line. (A shell like dash reads its stdin
// ahead, so a line after the program could not be read by it as data.)
func posixProgram(s posixSpec) []byte {
	eof := "POSTROTATE_DATA_" + strings.TrimPrefix(s.marker, "postrotate-")
	var b strings.Builder
	line := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	line(`marker=%s`, sq(s.marker))
	line(`fail() { printf '%%s failed %%s\n' "$marker" "$1" >&2; exit 125; }`)
	line(`abort() { cd / && rm -rf -- "$dir"; fail "$1"; }`)
	line(`umask 077`)
	line(`dir=%s/%s`, posixParent(s.parent), sq(s.dirName))
	line(`mkdir -m 700 -- "$dir" || fail 'create run directory'`)
	line(`cd -- "$dir" || abort 'enter run directory'`)
	write := func(file string, content []byte, what string) {
		line(`base64 -d > %s <<'%s' || abort 'write %s'`, sq("./"+file), eof, what)
		b.WriteString(wrap64(content))
		line(`%s`, eof)
	}
	write(s.name, s.content, "script")
	line(`chmod 700 %s || abort 'chmod script'`, sq("./"+s.name))
	if s.bootstrap {
		write(executor.BootstrapName, []byte(executor.PowerShellBootstrap), "bootstrap")
	}
	var env []string
	for _, name := range s.inherit {
		env = append(env, fmt.Sprintf(`${%[1]s+"%[1]s=$%[1]s"}`, name))
	}
	for _, kv := range s.env {
		env = append(env, sq(kv[0]+"="+kv[1]))
	}
	env = append(env, `"TMPDIR=$dir"`)
	argv := make([]string, len(s.argv))
	for i, a := range s.argv {
		argv[i] = sq(a)
	}
	line(`printf '%%s ready\n' "$marker" >&2`)
	line(`tail -c +2 <<'%s' | base64 -d | env -i %s %s`, eof, strings.Join(env, " "), strings.Join(argv, " "))
	line(`#%s`, base64.StdEncoding.EncodeToString(s.stdin))
	line(`%s`, eof)
	line(`status=$?`)
	line(`cd / && rm -rf -- "$dir"`)
	line(`exit "$status"`)
	return []byte(b.String())
}
