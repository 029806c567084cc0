package evict

import (
	"golang.org/x/sys/unix"
)

// Statfs measures the filesystem holding dir: its size and the bytes
// available to an unprivileged writer (what a fill can still use).
func Statfs(dir string) DiskSpace {
	return func() (uint64, uint64, error) {
		var st unix.Statfs_t
		if err := unix.Statfs(dir, &st); err != nil {
			return 0, 0, err
		}
		bs := uint64(st.Bsize) //nolint:gosec // block sizes are positive
		return st.Blocks * bs, st.Bavail * bs, nil
	}
}
