package storage_test

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestCleanStagingDirsDoesNotWalkTheTree: the part of the start-up cleanup
// a server runs before serving reads only the staging directory; the old
// driver temporary file deep in the layout is left to SweepTemps, which
// the server runs in the background.
func TestCleanStagingDirsDoesNotWalkTheTree(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	s := newFS(t, root)
	tmp := filepath.Join(root, "docker/registry/v2/repositories/library/x/_layers/sha256/ab/link.6c1f0e0e-0000-4000-8000-000000000000.tmp")
	if err := os.MkdirAll(filepath.Dir(tmp), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(tmp, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-time.Hour)
	if err := os.Chtimes(tmp, old, old); err != nil {
		t.Fatal(err)
	}
	if err := s.CleanStagingDirs(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(tmp); err != nil {
		t.Fatalf("CleanStagingDirs walked the tree: %v", err)
	}
	if err := s.SweepTemps(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(tmp); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("SweepTemps kept an old temporary file: %v", err)
	}
}
