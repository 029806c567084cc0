package storage_test

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	driver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/distribution/distribution/v3/registry/storage/driver/inmemory"
	"github.com/opencontainers/go-digest"

	"github.com/stowage/stowage/storage"
	"github.com/stowage/stowage/storage/storagetest"
)

func newFS(t testing.TB, root string, opts ...storage.Option) *storage.Store {
	t.Helper()
	s, err := storage.NewFilesystem(root, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func TestFilesystemConformance(t *testing.T) {
	t.Parallel()
	storagetest.Run(t, func(t *testing.T) *storage.Store { return newFS(t, t.TempDir()) })
}

func TestInMemoryConformance(t *testing.T) {
	t.Parallel()
	storagetest.Run(t, func(t *testing.T) *storage.Store {
		s, err := storage.NewInMemory()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		return s
	})
}

// The fault-injecting driver with no fault passes the suite on both kinds
// of store: local (filesystem below it) and remote (in-memory below it).
func TestFaultDriverConformance(t *testing.T) {
	t.Parallel()
	t.Run("filesystem", func(t *testing.T) {
		t.Parallel()
		storagetest.Run(t, func(t *testing.T) *storage.Store {
			return newFS(t, t.TempDir(), storage.WithDriverWrapper(func(d driver.StorageDriver) driver.StorageDriver {
				return storagetest.NewFaultDriver(d)
			}))
		})
	})
	t.Run("inmemory", func(t *testing.T) {
		t.Parallel()
		storagetest.Run(t, func(t *testing.T) *storage.Store {
			s, err := storage.New(storagetest.NewFaultDriver(inmemory.New()))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = s.Close() })
			return s
		})
	})
}

func stage(t *testing.T, s *storage.Store, data string) (digest.Digest, *storage.Staging) {
	t.Helper()
	d := digest.FromString(data)
	st, err := s.NewStaging(d)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.File.Close() })
	if _, err := st.IO().Write([]byte(data)); err != nil {
		t.Fatal(err)
	}
	return d, st
}

// entries lists what lies in the staging directory of root.
func entries(t *testing.T, root string) []string {
	t.Helper()
	es, err := os.ReadDir(filepath.Join(root, "stowage", "staging"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range es {
		names = append(names, e.Name())
	}
	return names
}

// TestCleanStagingKeepsLiveOwners: two processes share a root (two Stores
// here: flock locks belong to open files, so they exclude each other like
// two processes). B's start-up cleanup leaves A's fill alone, A commits;
// once A is dead, B's cleanup removes what A left.
func TestCleanStagingKeepsLiveOwners(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	root := t.TempDir()
	a := newFS(t, root)
	d, st := stage(t, a, "a fill in progress")

	b := newFS(t, root)
	if err := b.CleanStaging(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(st.File.Name()); err != nil {
		t.Fatalf("B's cleanup removed A's staging file: %v", err)
	}
	if err := a.CommitBlob(ctx, d, st); err != nil {
		t.Fatalf("A's commit after B's start: %v", err)
	}

	_, st2 := stage(t, a, "a fill the crash interrupts")
	storage.Crash(a)
	if err := b.CleanStaging(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(st2.File.Name()); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("dead owner's staging file kept: %v", err)
	}
	if left := entries(t, root); len(left) != 2 {
		t.Fatalf("staging after cleanup: %v, want only B's directory and lock", left)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if left := entries(t, root); len(left) != 0 {
		t.Fatalf("staging after B's Close: %v", left)
	}
	if _, err := b.StatBlob(ctx, d); err != nil {
		t.Fatalf("A's committed blob: %v", err)
	}
}

// TestCleanStagingFlatLayout: staging files of the previous layout, which
// an older version beside this one may still be writing, go once no write
// has touched them for LeftoverAge.
func TestCleanStagingFlatLayout(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	s := newFS(t, root)
	dir := filepath.Join(root, "stowage", "staging")
	old, fresh := filepath.Join(dir, "ab12.00aa"), filepath.Join(dir, "cd34.11bb")
	for _, p := range []string{old, fresh} {
		if err := os.WriteFile(p, []byte("part"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	past := time.Now().Add(-storage.LeftoverAge - time.Minute)
	if err := os.Chtimes(old, past, past); err != nil {
		t.Fatal(err)
	}
	if err := s.CleanStaging(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(old); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("old flat staging file kept: %v", err)
	}
	if _, err := os.Stat(fresh); err != nil {
		t.Fatalf("recent flat staging file removed: %v", err)
	}
}

// temps lists every temporary file of a write under root.
func temps(t *testing.T, root string) []string {
	t.Helper()
	var out []string
	_ = filepath.WalkDir(root, func(p string, de fs.DirEntry, err error) error {
		if err == nil && !de.IsDir() && strings.HasSuffix(p, ".tmp") {
			out = append(out, p)
		}
		return nil
	})
	return out
}

// TestFailedMetadataWriteLeavesNothing: a metadata write that fails (disk
// full at the flush, a short write, a failed move) leaves no temporary file,
// and the store works once the fault is gone.
func TestFailedMetadataWriteLeavesNothing(t *testing.T) {
	t.Parallel()
	for _, ft := range []storagetest.Fault{
		{Op: storagetest.OpCommit, Err: storagetest.ErrNoSpace},
		{Op: storagetest.OpWrite, AfterBytes: 10, Err: storagetest.ErrNoSpace},
		{Op: storagetest.OpMove, Err: storagetest.ErrNoSpace},
		{Op: storagetest.OpWriter, Err: storagetest.ErrNoSpace},
	} {
		t.Run(string(ft.Op), func(t *testing.T) {
			t.Parallel()
			ctx := t.Context()
			root := t.TempDir()
			var fd *storagetest.FaultDriver
			s := newFS(t, root, storage.WithDriverWrapper(func(d driver.StorageDriver) driver.StorageDriver {
				fd = storagetest.NewFaultDriver(d)
				return fd
			}))
			remove := fd.Inject(ft)
			d := digest.FromString("x")
			err := s.PutTag(ctx, "docker.io/library/x", "v1", d, time.Now())
			if !errors.Is(err, storagetest.ErrNoSpace) {
				t.Fatalf("PutTag under %s fault: %v", ft.Op, err)
			}
			if err := s.PutRecord(ctx, "jobs", "j1", []byte(`{"state":"running"}`)); err == nil {
				t.Fatal("PutRecord succeeded under the fault")
			}
			if left := temps(t, root); len(left) != 0 {
				t.Fatalf("temporary files left: %v", left)
			}
			remove()
			if err := s.PutTag(ctx, "docker.io/library/x", "v1", d, time.Now()); err != nil {
				t.Fatal(err)
			}
			if tag, err := s.GetTag(ctx, "docker.io/library/x", "v1"); err != nil || tag.Digest != d {
				t.Fatalf("tag after the fault: %+v %v", tag, err)
			}
			if left := temps(t, root); len(left) != 0 {
				t.Fatalf("temporary files left: %v", left)
			}
		})
	}
}

// TestCleanStagingRemovesDriverTemps: temporary files of writes a crash
// interrupted (the driver's <name>.<uuid>.tmp beside links, tag times and
// records) are removed at start once untouched for LeftoverAge; a recent
// one may be a live write of another process and stays.
func TestCleanStagingRemovesDriverTemps(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	s := newFS(t, root)
	const uuid = ".6c1f0e0e-0000-4000-8000-000000000000.tmp"
	dead := []string{
		"docker/registry/v2/repositories/library/x/_manifests/tags/v1/current/link" + uuid,
		"docker/registry/v2/repositories/library/x/_manifests/tags/v1/stowage_fetched_at" + uuid,
		"stowage/jobs/a1" + uuid,
	}
	live := "docker/registry/v2/repositories/library/x/_layers/sha256/ab/link" + uuid
	past := time.Now().Add(-storage.LeftoverAge - time.Minute)
	for _, p := range append(dead, live) {
		full := filepath.Join(root, filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if p != live {
			if err := os.Chtimes(full, past, past); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Records skips a write in progress.
	if recs, err := s.Records(t.Context(), "jobs"); err != nil || len(recs) != 0 {
		t.Fatalf("records: %q %v", recs, err)
	}
	if err := s.CleanStaging(t.Context()); err != nil {
		t.Fatal(err)
	}
	left := temps(t, root)
	if len(left) != 1 || !strings.HasSuffix(left[0], filepath.FromSlash(live)) {
		t.Fatalf("temporary files after cleanup: %v, want only %s", left, live)
	}
}

// TestCommitVanishedStaging: a staging file that vanished before the commit
// (an operator, a cleanup gone wrong) fails the commit; nothing is visible.
func TestCommitVanishedStaging(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	var fd *storagetest.FaultDriver
	s := newFS(t, t.TempDir(), storage.WithDriverWrapper(func(d driver.StorageDriver) driver.StorageDriver {
		fd = storagetest.NewFaultDriver(d)
		return fd
	}))
	d, st := stage(t, s, "bytes that vanish")
	fd.Inject(storagetest.Fault{Op: storagetest.OpMove, Path: "/stowage/staging/", Vanish: true})
	if err := s.CommitBlob(ctx, d, st); err == nil {
		t.Fatal("commit of a vanished staging file succeeded")
	}
	if _, err := s.StatBlob(ctx, d); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("blob after a failed commit: %v", err)
	}
}

// TestStagingWrapper: a Store opened WithStagingWrapper hands fills the
// wrapped file, so a test can fill the disk under a fill.
func TestStagingWrapper(t *testing.T) {
	t.Parallel()
	s := newFS(t, t.TempDir(), storage.WithStagingWrapper(func(f *os.File) storage.StagingFile {
		return &storagetest.FaultFile{File: f, AfterBytes: 4, Err: storagetest.ErrNoSpace}
	}))
	st, err := s.NewStaging(digest.FromString("abcdefgh"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.File.Close()
	n, err := st.IO().Write([]byte("abcdefgh"))
	if n != 4 || !errors.Is(err, storagetest.ErrNoSpace) {
		t.Fatalf("write through the wrapper: %d %v", n, err)
	}
	if err := st.Discard(); err != nil {
		t.Fatal(err)
	}
}
