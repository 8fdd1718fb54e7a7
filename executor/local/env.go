package local

import (
	"os"
	"runtime"

	"github.com/postrotate/postrotate/executor"
)

// DefaultInheritEnv returns the names of the variables a script inherits from
// the worker by default: PATH, HOME, USER, LOGNAME, LANG, LC_ALL and TZ, plus
// SYSTEMROOT, COMSPEC, PATHEXT, WINDIR and PROGRAMFILES on Windows.
func DefaultInheritEnv() []string {
	names := []string{"PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "TZ"}
	if runtime.GOOS == "windows" {
		names = append(names, "SYSTEMROOT", "COMSPEC", "PATHEXT", "WINDIR", "PROGRAMFILES")
	}
	return names
}

// environ builds the script's whole environment. Later entries win over
// earlier ones with the same name (os/exec keeps the last), so Env cannot
// override the POSTROTATE_* variables or TMPDIR.
func (l *Local) environ(job executor.Job, dir string) []string {
	env := make([]string, 0, len(l.opts.InheritEnv)+len(l.opts.Env)+7)
	for _, name := range l.opts.InheritEnv {
		if v, ok := os.LookupEnv(name); ok {
			env = append(env, name+"="+v)
		}
	}
	env = append(env, l.opts.Env...)
	env = append(env, job.Env()...)
	env = append(env, "TMPDIR="+dir)
	if runtime.GOOS == "windows" {
		env = append(env, "TEMP="+dir, "TMP="+dir)
	}
	return env
}
