//go:build linux || darwin

package broker

import "syscall"

// freeBytes is the space of dir's file system available to this process.
func freeBytes(dir string) (uint64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return st.Bavail * uint64(st.Bsize), nil
}
