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
)

// TestOrphanRealProcess: the owner of a fill is another process. While it
// lives its staging file is no orphan; once it is killed (SIGKILL) another
// Store on the root finds the file with its bytes, and a start-up cleanup
// running meanwhile leaves it alone until the adopter lets go; then the
// cleanup removes what is left.
func TestOrphanRealProcess(t *testing.T) {
	d := digest.FromString("an orphaned fill")
	const staged = "the first bytes of an orphaned fill"
	if root := os.Getenv("STOWAGE_TEST_ORPHAN_ROOT"); root != "" {
		s := newFS(t, root)
		for _, content := range []string{"short", staged} { // two attempts: the longer one wins
			st, err := s.NewStaging(d)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := st.File.WriteString(content); err != nil {
				t.Fatal(err)
			}
		}
		other, err := s.NewStaging(digest.FromString("another blob"))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := other.File.WriteString("a much longer staging file of another blob"); err != nil {
			t.Fatal(err)
		}
		fmt.Println("STAGED")
		_, _ = io.Copy(io.Discard, os.Stdin) // run until killed
		return
	}
	// Not parallel (see TestCleanStagingRealProcesses).
	root := t.TempDir()
	cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestOrphanRealProcess$")
	cmd.Env = append(os.Environ(), "STOWAGE_TEST_ORPHAN_ROOT="+root)
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
	sc := bufio.NewScanner(out)
	ready := false
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "STAGED") {
			ready = true
			break
		}
	}
	if !ready {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		t.Fatalf("the owner process staged nothing: %v", sc.Err())
	}

	s := newFS(t, root)
	if o, err := s.Orphan(d); o != nil || err != nil {
		t.Fatalf("a live process's staging file taken for an orphan: %+v %v", o, err)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	if o, err := s.Orphan(digest.FromString("a blob nobody staged")); o != nil || err != nil {
		t.Fatalf("an orphan of a blob nobody staged: %+v %v", o, err)
	}
	o, err := s.Orphan(d)
	if err != nil || o == nil {
		t.Fatalf("the killed owner's staging file: %+v %v", o, err)
	}
	got, err := io.ReadAll(o.File)
	if err != nil || string(got) != staged || o.Size != int64(len(staged)) {
		t.Fatalf("orphan: %q (size %d) %v, want %q", got, o.Size, err, staged)
	}
	// A replica starting meanwhile cleans the staging directory: the
	// orphan being adopted stays.
	if err := s.CleanStaging(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(o.File.Name()); err != nil {
		t.Fatalf("cleanup removed an orphan being adopted: %v", err)
	}
	name := o.File.Name()
	if err := o.Remove(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(name); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("adopted orphan kept: %v", err)
	}
	if err := s.CleanStaging(t.Context()); err != nil {
		t.Fatal(err)
	}
	if left := entries(t, root); len(left) != 2 {
		t.Fatalf("staging after cleanup: %v, want only this Store's directory and lock", left)
	}
	if o, err := s.Orphan(d); o != nil || err != nil {
		t.Fatalf("orphan after cleanup: %+v %v", o, err)
	}
}
