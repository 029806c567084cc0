//go:build linux

package storage_test

import (
	"os"
	"os/exec"
	"syscall"
	"testing"

	"github.com/stowage/stowage/storage"
)

// TestMetadataWriteFileTooLarge: a metadata write the kernel refuses (a
// real write error: the file size limit of a child process, which fails a
// write the way a full disk does) leaves no temporary file behind. The
// child exits without Close, like a process that dies after the failure.
func TestMetadataWriteFileTooLarge(t *testing.T) {
	if root := os.Getenv("STOWAGE_TEST_FSIZE_ROOT"); root != "" {
		if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &syscall.Rlimit{Cur: 512, Max: 512}); err != nil {
			t.Fatal(err)
		}
		s, err := storage.NewFilesystem(root)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.PutRecord(t.Context(), "jobs", "j1", make([]byte, 1024)); err == nil {
			t.Fatal("a write past the file size limit succeeded")
		}
		return
	}
	t.Parallel()
	root := t.TempDir()
	cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestMetadataWriteFileTooLarge$")
	cmd.Env = append(os.Environ(), "STOWAGE_TEST_FSIZE_ROOT="+root)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	if left := temps(t, root); len(left) != 0 {
		t.Fatalf("temporary files left: %v", left)
	}
}
