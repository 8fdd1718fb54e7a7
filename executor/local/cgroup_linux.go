//go:build linux

package local

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// A worker process's cgroups sit in the cgroup v2 it runs in:
//
//	<own cgroup>/postrotate-<pid>-<start time>/run-<n>
//
// one directory per worker process, named after its pid and start time so
// that a later process with the same pid is told apart, and one per running
// script. The worker process's directory is there only while scripts run:
// what remains of it at any other time was left by a worker process killed
// in the middle of a script, and is for Sweep. No controller is enabled in them: they only group processes, so
// cgroup v2's "no internal processes" rule does not apply and they can be
// created beside the worker in its own cgroup.

// instancePrefix starts the name of a worker process's cgroup.
const instancePrefix = "postrotate-"

// drainTimeout bounds the wait for a killed cgroup to empty.
const drainTimeout = 5 * time.Second

// cgroupRoot is this process's cgroup, holding its scripts' ones.
type cgroupRoot struct {
	own string // the cgroup the worker runs in
	dir string // <own>/postrotate-<pid>-<start>

	mu      sync.Mutex
	running int // scripts in dir
}

// ourCgroup creates this process's cgroup, once; its error says why
// scripts run without a cgroup.
var ourCgroup = sync.OnceValues(func() (*cgroupRoot, error) {
	r, err := setupCgroup()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNoCgroup, err)
	}
	return r, nil
})

func setupCgroup() (*cgroupRoot, error) {
	own, err := ownCgroup()
	if err != nil {
		return nil, err
	}
	_, start, err := procStat(os.Getpid())
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(own, fmt.Sprintf("%s%d-%d", instancePrefix, os.Getpid(), start))
	// Can it be written? The directory is made again for the first script.
	if err := os.Mkdir(dir, 0o755); err != nil {
		return nil, err
	}
	if err := syscall.Rmdir(dir); err != nil {
		return nil, fmt.Errorf("rmdir %s: %w", dir, err)
	}
	return &cgroupRoot{own: own, dir: dir}, nil
}

// enter creates the cgroup of a script about to start, and this process's
// directory first when no other script runs.
func (r *cgroupRoot) enter() (string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.running == 0 {
		if err := os.Mkdir(r.dir, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
			return "", err
		}
	}
	dir := filepath.Join(r.dir, "run-"+strconv.FormatUint(scriptSeq.Add(1), 10))
	if err := os.Mkdir(dir, 0o755); err != nil {
		if r.running == 0 {
			_ = syscall.Rmdir(r.dir)
		}
		return "", err
	}
	r.running++
	return dir, nil
}

// leave removes the cgroup of a script that has ended, which must be empty,
// and this process's directory when no other script runs. One that could
// not be emptied stays, and so does this process's directory: Sweep removes
// them once this process has ended.
func (r *cgroupRoot) leave(dir string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	_ = removeCgroup(dir)
	r.running--
	if r.running == 0 {
		_ = syscall.Rmdir(r.dir)
	}
}

func containment() error {
	_, err := ourCgroup()
	return err
}

// ownCgroup returns the directory of the cgroup v2 this process runs in, its
// "0::<path>" line of /proc/self/cgroup.
func ownCgroup() (string, error) {
	data, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return "", err
	}
	for line := range strings.Lines(string(data)) {
		if path, ok := strings.CutPrefix(strings.TrimSuffix(line, "\n"), "0::"); ok {
			return cgroupDir(path)
		}
	}
	return "", errors.New("no cgroup v2 line in /proc/self/cgroup (a cgroup v1 only host)")
}

// cgroupDir returns the directory of the cgroup v2 at path, under the
// cgroup2 mount of /proc/self/mountinfo that holds it (/sys/fs/cgroup on a
// cgroup v2 host, /sys/fs/cgroup/unified on a hybrid one).
func cgroupDir(path string) (string, error) {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return "", err
	}
	for line := range strings.Lines(string(data)) {
		// id parent major:minor root mount-point options [optional...] - fstype source super-options
		fields := strings.Fields(line)
		sep := slices.Index(fields, "-")
		if sep < 5 || sep+1 >= len(fields) || fields[sep+1] != "cgroup2" {
			continue
		}
		root, point := unescapeMountinfo(fields[3]), unescapeMountinfo(fields[4])
		rel, ok := strings.CutPrefix(path, root)
		if !ok || (root != "/" && rel != "" && !strings.HasPrefix(rel, "/")) {
			continue
		}
		return filepath.Join(point, rel), nil
	}
	return "", fmt.Errorf("no cgroup2 mount in /proc/self/mountinfo holds %s", path)
}

// unescapeMountinfo undoes the octal escapes (\040 for a space) of a path
// in /proc/self/mountinfo.
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// procStat returns the state and the start time (in clock ticks since boot)
// of process pid, from /proc/<pid>/stat.
func procStat(pid int) (state byte, start uint64, err error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, 0, err
	}
	// pid (comm) state ppid ...: comm may hold anything, state follows the
	// last ')' and the start time is the 22nd field.
	i := bytes.LastIndexByte(data, ')')
	var fields []string
	if i >= 0 {
		fields = strings.Fields(string(data[i+1:]))
	}
	if len(fields) < 20 {
		return 0, 0, fmt.Errorf("parse /proc/%d/stat: %q", pid, data)
	}
	start, err = strconv.ParseUint(fields[19], 10, 64)
	if err != nil {
		return 0, 0, fmt.Errorf("parse /proc/%d/stat: %w", pid, err)
	}
	return fields[0][0], start, nil
}

// scriptSeq numbers the scripts' cgroups of this process.
var scriptSeq atomic.Uint64

// clone3Refused is set once the kernel refused to start a process right into
// a cgroup: the next scripts are moved in just after they start.
var clone3Refused atomic.Bool

// cgroup is the cgroup one script runs in.
type cgroup struct {
	root *cgroupRoot
	dir  string
	// f is the open directory the script is started right into
	// (CLONE_INTO_CGROUP); nil when it is moved in after it starts.
	f *os.File
}

// newCgroup returns the cgroup of a script about to start, or nil when
// scripts run without one (see Containment).
func (l *Local) newCgroup() (*cgroup, error) {
	r, err := ourCgroup()
	if err != nil || l.noCgroup {
		return nil, nil
	}
	dir, err := r.enter()
	if err != nil {
		return nil, fmt.Errorf("create cgroup: %w", err)
	}
	cg := &cgroup{root: r, dir: dir}
	if !l.cgroupByProcs && !clone3Refused.Load() {
		if cg.f, err = os.Open(dir); err != nil {
			r.leave(dir)
			return nil, fmt.Errorf("open cgroup: %w", err)
		}
	}
	return cg, nil
}

// prepare has the script start right in the cgroup.
func (cg *cgroup) prepare(attr *syscall.SysProcAttr) {
	if cg != nil && cg.f != nil {
		attr.UseCgroupFD = true
		attr.CgroupFD = int(cg.f.Fd())
	}
}

// retryStart tells whether a start that failed with err is to be tried
// again, the script then being moved into the cgroup once started: the
// kernel has no clone3 (before Linux 5.3, or a seccomp filter, as Docker's
// default one, refuses it with ENOSYS) or no CLONE_INTO_CGROUP (before 5.7:
// E2BIG or EINVAL).
func (cg *cgroup) retryStart(err error) bool {
	if cg == nil || cg.f == nil {
		return false
	}
	switch {
	case errors.Is(err, syscall.ENOSYS), errors.Is(err, syscall.E2BIG):
		clone3Refused.Store(true)
	case errors.Is(err, syscall.EINVAL): // may also come from execve: not remembered
	default:
		return false
	}
	_ = cg.f.Close()
	cg.f = nil
	return true
}

// started moves the script into its cgroup if it could not start in it. A
// process it forks before that stays outside.
func (cg *cgroup) started(pid int) error {
	switch {
	case cg == nil:
		return nil
	case cg.f != nil: // started right in it
		_ = cg.f.Close()
		cg.f = nil
		return nil
	}
	if err := writeCgroupFile(cg.dir, "cgroup.procs", strconv.Itoa(pid)); err != nil {
		return fmt.Errorf("move process %d into its cgroup: %w", pid, err)
	}
	return nil
}

// terminate sends SIGTERM to the processes of the cgroup that are not in
// the script's process group pgid, which got it already: those that called
// setsid.
func (cg *cgroup) terminate(pgid int) {
	if cg == nil {
		return
	}
	pids, _ := readProcs(cg.dir)
	for _, pid := range pids {
		if g, err := syscall.Getpgid(pid); err == nil && g != pgid {
			_ = syscall.Kill(pid, syscall.SIGTERM)
		}
	}
}

// kill kills every process in the cgroup.
func (cg *cgroup) kill() {
	if cg != nil {
		killCgroup(cg.dir)
	}
}

// release empties and removes the cgroup once the script has ended. After a
// kill it waits, at most drainTimeout, for the last process of the cgroup to
// die. After the script exited by itself, what it left running (a daemon it
// started) is moved back to the worker's own cgroup, where it would have been
// without this one, and keeps running.
func (cg *cgroup) release(killed bool) {
	if cg == nil {
		return
	}
	if cg.f != nil {
		_ = cg.f.Close()
	}
	if killed {
		_ = drain(cg.dir)
	} else {
		cg.evacuate()
	}
	cg.root.leave(cg.dir)
}

// evacuate moves the processes of the cgroup to the worker's own cgroup,
// until none is left (a process forking meanwhile adds one), a bounded
// number of times.
func (cg *cgroup) evacuate() {
	for range 100 {
		pids, err := readProcs(cg.dir)
		if err != nil || len(pids) == 0 {
			return
		}
		for _, pid := range pids {
			_ = writeCgroupFile(cg.root.own, "cgroup.procs", strconv.Itoa(pid))
		}
	}
}

// killCgroup sends SIGKILL to every process in the cgroup tree at dir:
// through cgroup.kill (Linux 5.14), which also stops them forking
// meanwhile, or else to each process listed.
func killCgroup(dir string) {
	if writeCgroupFile(dir, "cgroup.kill", "1") == nil {
		return
	}
	for _, pid := range procsTree(dir) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}

// drain kills every process in the cgroup tree at dir, again until none is
// left, and waits for that at most drainTimeout.
func drain(dir string) error {
	deadline := time.Now().Add(drainTimeout)
	wait := time.Millisecond
	for {
		killCgroup(dir)
		events, err := os.ReadFile(filepath.Join(dir, "cgroup.events"))
		if err != nil {
			return fmt.Errorf("drain cgroup: %w", err)
		}
		if !bytes.Contains(events, []byte("populated 1")) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("drain cgroup %s: processes still there %s after SIGKILL", dir, drainTimeout)
		}
		// The kernel notifies a change of cgroup.events to inotify and
		// poll; a short, growing wait serves as well for the few
		// milliseconds processes take to die.
		time.Sleep(wait)
		wait = min(2*wait, 20*time.Millisecond)
	}
}

// removeCgroup removes the cgroup tree at dir, which must hold no process.
func removeCgroup(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if e.IsDir() {
			if err := removeCgroup(filepath.Join(dir, e.Name())); err != nil {
				return err
			}
		}
	}
	return syscall.Rmdir(dir)
}

// readProcs returns the pids in the cgroup at dir (not in its children).
func readProcs(dir string) ([]int, error) {
	data, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	if err != nil {
		return nil, err
	}
	var pids []int
	for f := range strings.FieldsSeq(string(data)) {
		if pid, err := strconv.Atoi(f); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// procsTree returns the pids in the cgroup tree at dir.
func procsTree(dir string) []int {
	pids, _ := readProcs(dir)
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if e.IsDir() {
			pids = append(pids, procsTree(filepath.Join(dir, e.Name()))...)
		}
	}
	return pids
}

func writeCgroupFile(dir, name, value string) error {
	f, err := os.OpenFile(filepath.Join(dir, name), os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteString(value)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

func sweep() (int, error) {
	r, err := ourCgroup()
	if err != nil {
		return 0, nil
	}
	entries, err := os.ReadDir(r.own)
	if err != nil {
		return 0, fmt.Errorf("sweep cgroups: %w", err)
	}
	killed := 0
	var errs []error
	for _, e := range entries {
		dir := filepath.Join(r.own, e.Name())
		if !e.IsDir() || dir == r.dir || !endedInstance(e.Name()) {
			continue
		}
		killed += len(procsTree(dir))
		err := drain(dir)
		if err == nil {
			err = removeCgroup(dir)
		}
		if err != nil && !errors.Is(err, fs.ErrNotExist) { // ErrNotExist: swept by another worker meanwhile
			errs = append(errs, fmt.Errorf("sweep cgroup %s: %w", dir, err))
		}
	}
	return killed, errors.Join(errs...)
}

// endedInstance tells whether name is the cgroup of a worker process that
// has ended: no process has its pid and start time, or it is a zombie. When
// that cannot be told, it has not.
func endedInstance(name string) bool {
	rest, ok := strings.CutPrefix(name, instancePrefix)
	p, s, ok2 := strings.Cut(rest, "-")
	pid, err := strconv.Atoi(p)
	start, err2 := strconv.ParseUint(s, 10, 64)
	if !ok || !ok2 || err != nil || err2 != nil || pid <= 0 {
		return false
	}
	state, st, err := procStat(pid)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return true
	case err != nil:
		return false
	}
	return st != start || state == 'Z' || state == 'X'
}
