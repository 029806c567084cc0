package storage_test

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

// TestStagingRemovedUnderALiveStore: something removes a running Store's
// staging directory and its lock file (an operator's rm, a cleaner of
// /tmp where object-storage stores stage). The next fill must still get a
// staging file, and the Store must own its directory again: another
// process's cleanup leaves it and the fill's file alone. Before
// NewStaging restored them, every fill failed ("no such file or
// directory") until the process restarted, and a directory re-created by
// a metadata write had no lock, so any cleanup removed it as a dead
// owner's.
func TestStagingRemovedUnderALiveStore(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	a := newFS(t, root)
	if err := os.RemoveAll(filepath.Join(root, "stowage")); err != nil {
		t.Fatal(err)
	}
	// A metadata write re-creates the directory (the driver makes the
	// parents of its temporary file), but not the lock file.
	if err := a.PutTag(t.Context(), "docker.io/library/x", "v1", digest.FromString("x"), time.Now()); err != nil {
		t.Fatal(err)
	}
	d := digest.FromString("a fill after the staging directory went")
	st, err := a.NewStaging(d)
	if err != nil {
		t.Fatalf("NewStaging after its directory was removed: %v", err)
	}
	defer st.File.Close()
	if _, err := st.File.WriteString("some bytes"); err != nil {
		t.Fatal(err)
	}
	b := newFS(t, root)
	if err := b.CleanStagingDirs(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(st.File.Name()); err != nil {
		t.Fatalf("another process's cleanup removed the live fill's staging file: %v", err)
	}
	if o, err := b.Orphan(d); err != nil || o != nil {
		t.Fatalf("another process adopts the live fill's staging file: %+v %v", o, err)
	}
	if err := st.Discard(); err != nil {
		t.Fatal(err)
	}
}
