//go:build linux

package storage_test

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"

	"github.com/opencontainers/go-digest"

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
	// Not parallel: between fork and exec a child holds a copy of every
	// descriptor, flock'd staging locks included, so a parallel test that
	// crashes a Store would see its dead owner's lock still held. Tests
	// without t.Parallel run before the parallel ones start.
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

// TestCleanStagingRealProcesses: the owner of a fill is another process.
// While it runs, this process's start-up cleanup leaves its staging file
// alone; once it is killed (SIGKILL: no Close, the kernel drops the lock),
// the cleanup removes what it left.
func TestCleanStagingRealProcesses(t *testing.T) {
	if root := os.Getenv("STOWAGE_TEST_OWNER_ROOT"); root != "" {
		s, err := storage.NewFilesystem(root)
		if err != nil {
			t.Fatal(err)
		}
		st, err := s.NewStaging(digest.FromString("a long fill"))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := st.File.WriteString("a long"); err != nil {
			t.Fatal(err)
		}
		fmt.Println("STAGED", st.File.Name())
		_, _ = io.Copy(io.Discard, os.Stdin) // run until killed
		return
	}
	// Not parallel: between fork and exec a child holds a copy of every
	// descriptor, flock'd staging locks included, so a parallel test that
	// crashes a Store would see its dead owner's lock still held. Tests
	// without t.Parallel run before the parallel ones start.
	root := t.TempDir()
	cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestCleanStagingRealProcesses$")
	cmd.Env = append(os.Environ(), "STOWAGE_TEST_OWNER_ROOT="+root)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	defer stdin.Close()
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var staged string
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if name, ok := strings.CutPrefix(sc.Text(), "STAGED "); ok {
			staged = name
			break
		}
	}
	if staged == "" {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		t.Fatalf("the owner process staged nothing: %v", sc.Err())
	}

	s := newFS(t, root)
	if err := s.CleanStaging(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(staged); err != nil {
		t.Fatalf("cleanup removed a live process's staging file: %v", err)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	if err := s.CleanStaging(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(staged); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("a killed process's staging file kept: %v", err)
	}
	if left := entries(t, root); len(left) != 2 {
		t.Fatalf("staging after cleanup: %v, want only this Store's directory and lock", left)
	}
}
