package ssh

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"path"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The remote commands below are run by the login shell of the target
// account, which must be a POSIX shell (sh, bash, dash, ksh, zsh). They hold
// no secret: the script travels on the session's stdin, the payload too.

// sq quotes s for a POSIX shell.
func sq(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// runDirPrefix starts the base name of every run directory on a target.
const runDirPrefix = "postrotate-"

// prepareCommand creates a private run directory under parent (empty means
// the target's $TMPDIR, else /tmp), prints its path, writes its stdin to the
// script file name in it with mode 0700 and, when withSystem, prints the
// output of uname -s. The path is printed before the script is written, so
// that a failed upload still tells what to remove.
func prepareCommand(parent, name string, withSystem bool) string {
	p := `"${TMPDIR:-/tmp}"`
	if parent != "" {
		p = sq(parent)
	}
	var b strings.Builder
	b.WriteString("umask 077 && d=$(mktemp -d ")
	b.WriteString(p + "/" + runDirPrefix + "XXXXXXXXXX")
	b.WriteString(`) && printf '%s\n' "$d" && cat > "$d"/` + sq(name))
	b.WriteString(` && chmod 700 "$d"/` + sq(name))
	if withSystem {
		b.WriteString(" && uname -s")
	}
	return b.String()
}

// uploadCommand writes its stdin to file (mode 0600 under the umask).
func uploadCommand(file string) string {
	return "umask 077 && cat > " + sq(file)
}

// parsePrepared reads what prepareCommand printed: the run directory and,
// when asked for, the system name.
func parsePrepared(out string, withSystem bool) (dir, system string, err error) {
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	dir = lines[0]
	if !validRunDir(dir) {
		return "", "", fmt.Errorf("unexpected run directory %q", dir)
	}
	if withSystem {
		if len(lines) < 2 || strings.TrimSpace(lines[1]) == "" {
			return dir, "", fmt.Errorf("no output from uname -s")
		}
		system = strings.TrimSpace(lines[1])
	}
	return dir, system, nil
}

// validRunDir reports whether dir looks like a directory prepareCommand
// made: an absolute, clean path whose base starts with runDirPrefix. It
// guards the rm -rf of cleanupCommand.
func validRunDir(dir string) bool {
	if !strings.HasPrefix(dir, "/") || strings.ContainsAny(dir, "\x00\n\r") {
		return false
	}
	clean := path.Clean(dir)
	return clean != "/" && strings.HasPrefix(path.Base(clean), runDirPrefix) && len(path.Base(clean)) > len(runDirPrefix)
}

// cleanupCommand removes a run directory.
func cleanupCommand(dir string) string {
	return "rm -rf -- " + sq(dir)
}

// envName is a variable name a shell can expand.
var envName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// runCommand is the command of the script's session. The login shell prints
// the marker line with its pid on stderr, enters the run directory, then
// execs env with a minimal environment, which execs argv: the script keeps
// the shell's pid, and since sshd makes each session's process the leader
// of a new session and process group, that pid is the pgid of the whole
// process tree. inherit names the variables kept from the login environment
// (when set); env holds KEY=VALUE pairs added after them.
func runCommand(marker, dir string, inherit, env, argv []string) string {
	var b strings.Builder
	b.WriteString(`printf '` + marker + ` %s\n' "$$" >&2 && cd ` + sq(dir) + " && exec env -i")
	for _, name := range inherit {
		b.WriteString(" ${" + name + `+"` + name + `=$` + name + `"}`)
	}
	for _, kv := range env {
		b.WriteString(" " + sq(kv))
	}
	if strings.Contains(argv[0], "=") {
		// env would take it for a variable: let a shell exec it.
		b.WriteString(` /bin/sh -c 'exec "$@"' sh`)
	}
	for _, a := range argv {
		b.WriteString(" " + sq(a))
	}
	return b.String()
}

// killCommand signals the process group pgid: SIGTERM, then up to grace for
// it to go, then SIGKILL to whatever is left. When pgid is not a group (a
// login shell that forked), the single process is signalled. The
// escalation runs on the target: it completes even if the connection drops.
func killCommand(pgid int, grace time.Duration) string {
	p := strconv.Itoa(pgid)
	tenths := int((grace + 99*time.Millisecond) / (100 * time.Millisecond))
	return fmt.Sprintf("kill -TERM -%[1]s 2>/dev/null || kill -TERM %[1]s 2>/dev/null; "+
		"n=0; while [ $n -lt %[2]d ] && { kill -0 -%[1]s 2>/dev/null || kill -0 %[1]s 2>/dev/null; }; do sleep 0.1; n=$((n+1)); done; "+
		"kill -KILL -%[1]s 2>/dev/null; kill -KILL %[1]s 2>/dev/null; exit 0", p, tenths)
}

// newMarker returns a marker the script cannot guess.
func newMarker() (string, error) {
	var b [12]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return "postrotate-pgid-" + hex.EncodeToString(b[:]), nil
}

// maxPreludeLine bounds how much of a line before the marker is held back
// while looking for the marker.
const maxPreludeLine = 4096

// markerFilter passes a session's stderr through to out, except the marker
// line that runCommand prints before the script starts, from which it takes
// the pgid. Lines before the marker (a login environment's messages) are
// passed through. Safe for one writer and concurrent readers of the pgid.
type markerFilter struct {
	mu     sync.Mutex
	out    io.Writer
	marker []byte // marker then a space
	buf    []byte
	found  bool
	pgid   int
	ready  chan struct{} // closed when the marker was seen
}

func newMarkerFilter(marker string, out io.Writer) *markerFilter {
	return &markerFilter{out: out, marker: []byte(marker + " "), ready: make(chan struct{})}
}

// Write passes p on, minus the marker line. It never fails.
func (f *markerFilter) Write(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := len(p)
	if f.found {
		_, _ = f.out.Write(p)
		return n, nil
	}
	f.buf = append(f.buf, p...)
	for !f.found {
		i := bytes.IndexByte(f.buf, '\n')
		if i < 0 {
			if len(f.buf) > maxPreludeLine {
				_, _ = f.out.Write(f.buf)
				f.buf = f.buf[:0]
			}
			return n, nil
		}
		line := f.buf[:i]
		f.buf = f.buf[i+1:]
		if rest, ok := bytes.CutPrefix(line, f.marker); ok {
			if pgid, err := strconv.Atoi(string(rest)); err == nil && pgid > 1 {
				f.found, f.pgid = true, pgid
				close(f.ready)
				if len(f.buf) > 0 {
					_, _ = f.out.Write(f.buf)
				}
				f.buf = nil
				return n, nil
			}
		}
		_, _ = f.out.Write(line)
		_, _ = f.out.Write([]byte{'\n'})
	}
	return n, nil
}

// Flush passes on a partial line held back while looking for the marker.
func (f *markerFilter) Flush() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.buf) > 0 {
		_, _ = f.out.Write(f.buf)
		f.buf = nil
	}
}

// PGID returns the pgid of the script's process tree, 0 before the marker.
func (f *markerFilter) PGID() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.pgid
}
