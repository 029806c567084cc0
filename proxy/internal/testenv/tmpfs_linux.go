//go:build linux

package testenv

import (
	"fmt"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// SmallFS mounts a tmpfs of size bytes on a new directory for the test and
// returns it; it is unmounted at cleanup. Mounting needs root (CAP_SYS_ADMIN):
// without it the test is skipped, except under CI=true, where it fails (CI
// runs the tests as root, so a skip there would hide a lost test).
func SmallFS(t testing.TB, size int64) string {
	t.Helper()
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, fmt.Sprintf("size=%d", size)); err != nil {
		msg := fmt.Sprintf("cannot mount a %d-byte tmpfs on %s (needs root): %v", size, dir, err)
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg + "; run as root to test a full disk")
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir
}

// ResizeFS changes the size of a tmpfs SmallFS mounted (space returns).
func ResizeFS(t testing.TB, dir string, size int64) {
	t.Helper()
	if err := unix.Mount("tmpfs", dir, "tmpfs", unix.MS_REMOUNT, fmt.Sprintf("size=%d", size)); err != nil {
		t.Fatalf("resize tmpfs %s: %v", dir, err)
	}
}

// FillFS writes a file in dir until the filesystem is full and returns its
// path: removing it gives the space back.
func FillFS(t testing.TB, dir string) string {
	t.Helper()
	f, err := os.CreateTemp(dir, "filler-*")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 64<<10)
	for range 1 << 16 { // bounded: 4 GiB
		if _, err := f.Write(buf); err != nil {
			break
		}
	}
	for range 64 { // the last partial block
		if _, err := f.Write(buf[:512]); err != nil {
			break
		}
	}
	return f.Name()
}
