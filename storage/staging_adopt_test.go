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
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/stowage/stowage/storage"
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

// TestCleanStagingKeepsRecentOrphans: a server's cleanup with a grace
// (CleanStagingDirsKeeping) leaves a dead owner's directory that was
// written to within the grace, so its partial downloads can still be
// adopted (say the dead replica restarted at once on the same volume), and
// removes it once it is older; the plain cleanup removes it at once.
func TestCleanStagingKeepsRecentOrphans(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	root := t.TempDir()
	d := digest.FromString("a fill the crash interrupts")
	a := newFS(t, root)
	st, err := a.NewStaging(d)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.File.WriteString("half of it"); err != nil {
		t.Fatal(err)
	}
	storage.Crash(a)

	b := newFS(t, root)
	if err := b.CleanStagingDirsKeeping(ctx, storage.OrphanGrace); err != nil {
		t.Fatal(err)
	}
	o, err := b.Orphan(d)
	if err != nil || o == nil {
		t.Fatalf("recently dead owner's staging after the cleanup with a grace: %+v %v", o, err)
	}
	if err := o.Close(); err != nil {
		t.Fatal(err)
	}
	// A minute and a half later nothing was written: the next pass removes it.
	old := time.Now().Add(-storage.OrphanGrace - 30*time.Second)
	for _, p := range []string{st.File.Name(), filepath.Dir(st.File.Name())} {
		if err := os.Chtimes(p, old, old); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.CleanStagingDirsKeeping(ctx, storage.OrphanGrace); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(st.File.Name()); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("dead owner's staging kept past the grace: %v", err)
	}
	if left := entries(t, root); len(left) != 2 {
		t.Fatalf("staging after cleanup: %v, want only B's directory and lock", left)
	}

	// Without a grace (commands other than serve) it goes at once.
	c := newFS(t, root)
	st2, err := c.NewStaging(d)
	if err != nil {
		t.Fatal(err)
	}
	storage.Crash(c)
	if err := b.CleanStagingDirs(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(st2.File.Name()); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("plain cleanup kept a dead owner's staging: %v", err)
	}
}

// TestHandOver: a fill cut at shutdown hands its staging file over. While
// its process still lives (its own staging stays locked) another Store
// finds the file as an orphan, cut to the valid length; the live
// process's other staging files stay private; the handed-over file
// outlives its Store's Close; a cleanup with a grace leaves it, the plain
// cleanup removes it. Nothing is handed over from an empty fill or a store
// whose staging no other process can read.
func TestHandOver(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	root := t.TempDir()
	d := digest.FromString("a fill cut at the shutdown deadline")
	a, b := newFS(t, root), newFS(t, root)
	st, err := a.NewStaging(d)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.File.WriteString("verified-length bytes|and a torn tail"); err != nil {
		t.Fatal(err)
	}
	running, err := a.NewStaging(digest.FromString("a fill that still runs"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := running.File.WriteString("live"); err != nil {
		t.Fatal(err)
	}
	if ok, err := a.HandOver(st, int64(len("verified-length bytes"))); !ok || err != nil {
		t.Fatalf("HandOver: %v %v", ok, err)
	}
	if o, err := b.Orphan(digest.FromString("a fill that still runs")); o != nil || err != nil {
		t.Fatalf("a live Store's other staging file taken for an orphan: %+v %v", o, err)
	}
	o, err := b.Orphan(d)
	if err != nil || o == nil {
		t.Fatalf("handed-over staging while its process lives: %+v %v", o, err)
	}
	got, err := io.ReadAll(o.File)
	if err != nil || string(got) != "verified-length bytes" || o.Size != int64(len(got)) {
		t.Fatalf("orphan: %q (size %d) %v", got, o.Size, err)
	}
	if err := o.Close(); err != nil {
		t.Fatal(err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.CleanStagingDirsKeeping(ctx, storage.OrphanGrace); err != nil {
		t.Fatal(err)
	}
	if o, err = b.Orphan(d); err != nil || o == nil || o.Size != int64(len("verified-length bytes")) {
		t.Fatalf("handed-over staging after its Store closed and a cleanup with a grace: %+v %v", o, err)
	}
	if err := o.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.CleanStagingDirs(ctx); err != nil {
		t.Fatal(err)
	}
	if o, err := b.Orphan(d); o != nil || err != nil {
		t.Fatalf("handed-over staging after the plain cleanup: %+v %v", o, err)
	}
	if left := entries(t, root); len(left) != 2 {
		t.Fatalf("staging after cleanup: %v, want only B's directory and lock", left)
	}

	// Nothing to hand over: the file stays where it is (the caller
	// discards it).
	empty, err := b.NewStaging(d)
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := b.HandOver(empty, 0); ok || err != nil {
		t.Fatalf("HandOver of 0 bytes: %v %v", ok, err)
	}
	if _, err := os.Stat(empty.File.Name()); err != nil {
		t.Fatalf("an empty staging file moved: %v", err)
	}
	mem, err := storage.NewInMemory()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = mem.Close() })
	ms, err := mem.NewStaging(d)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ms.File.WriteString("bytes"); err != nil {
		t.Fatal(err)
	}
	if ok, err := mem.HandOver(ms, 5); ok || err != nil {
		t.Fatalf("HandOver on a store without a shared root: %v %v", ok, err)
	}
}

func TestOrphanSkipsWhatIsNoStagingFile(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	d := digest.FromString("a blob whose dead owner left odd files")
	a := newFS(t, root)
	st, err := a.NewStaging(d)
	if err != nil {
		t.Fatal(err)
	}
	const staged = "the real staged bytes"
	if _, err := st.File.WriteString(staged); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Dir(st.File.Name())
	outside := filepath.Join(t.TempDir(), "elsewhere")
	if err := os.WriteFile(outside, []byte(strings.Repeat("not a staging file ", 100)), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(dir, d.Encoded()+".link")); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(filepath.Join(dir, d.Encoded()+".fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	// A longer digest (sha512) whose hex begins with d's: another blob.
	longer := d.Encoded() + strings.Repeat("ab", 32) + ".0123456789abcdef"
	if err := os.WriteFile(filepath.Join(dir, longer), []byte(strings.Repeat("another blob ", 100)), 0o644); err != nil {
		t.Fatal(err)
	}
	storage.Crash(a)

	b := newFS(t, root)
	type result struct {
		o   *storage.Orphan
		err error
	}
	got := make(chan result, 1)
	go func() {
		o, err := b.Orphan(d)
		got <- result{o, err}
	}()
	var r result
	select {
	case r = <-got:
	case <-time.After(10 * time.Second):
		// Unblock the open so the goroutine ends, then fail.
		if w, err := os.OpenFile(filepath.Join(dir, d.Encoded()+".fifo"), os.O_WRONLY, 0); err == nil {
			_ = w.Close()
		}
		r = <-got
		if r.o != nil {
			_ = r.o.Close()
		}
		t.Fatal("Orphan blocked on a FIFO under a staging name")
	}
	if r.err != nil || r.o == nil {
		t.Fatalf("Orphan: %+v, %v; want the regular staging file", r.o, r.err)
	}
	defer r.o.Close()
	b2, err := io.ReadAll(io.NewSectionReader(r.o.File, 0, r.o.Size))
	if err != nil {
		t.Fatal(err)
	}
	if string(b2) != staged || r.o.File.Name() != st.File.Name() {
		t.Fatalf("adopted %s (%d bytes: %.30q), want the staging file %s", r.o.File.Name(), r.o.Size, b2, st.File.Name())
	}
}
