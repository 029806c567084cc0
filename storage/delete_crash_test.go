package storage_test

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	driver "github.com/distribution/distribution/v3/registry/storage/driver"

	"github.com/stowage/stowage/storage"
)

// errKilled is what the half-deleting driver returns where the process
// would have died.
var errKilled = errors.New("killed in the middle of a delete")

// halfDeleter dies in the middle of every Delete: it removes the files
// under the path and returns before removing the directories, as a
// SIGKILL between os.RemoveAll's unlinks and its rmdir leaves them. A
// real kill lands there only now and then; this puts it there every time.
type halfDeleter struct {
	driver.StorageDriver
	root string
}

func (h halfDeleter) Delete(_ context.Context, p string) error {
	full := filepath.Join(h.root, filepath.FromSlash(p))
	if _, err := os.Lstat(full); errors.Is(err, fs.ErrNotExist) {
		return driver.PathNotFoundError{Path: p}
	}
	err := filepath.WalkDir(full, func(q string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		return os.Remove(q)
	})
	return errors.Join(err, errKilled)
}

// TestKilledDeleteLeavesNoBrokenLink: a process killed in the middle of
// removing a blob (as eviction, gc and verify --repair do) leaves a layout
// that "proxy verify" finds sound: the blob is either still linked or
// gone with its link directory, never a link directory without its link
// file. (Before deletes were renames into the staging directory first,
// this left _layers/sha256/<hex>/ empty: "link file missing".)
func TestKilledDeleteLeavesNoBrokenLink(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	root := t.TempDir()
	const repo = "docker.io/library/app"
	seed := newFS(t, root)
	d := commitBlob(t, seed, "a layer that is being evicted")
	if err := seed.LinkBlob(ctx, repo, d); err != nil {
		t.Fatal(err)
	}
	if err := seed.PutTag(ctx, repo, "v1", d, time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := seed.Close(); err != nil {
		t.Fatal(err)
	}
	dying, err := storage.NewFilesystem(root, storage.WithDriverWrapper(func(d driver.StorageDriver) driver.StorageDriver {
		return halfDeleter{StorageDriver: d, root: root}
	}))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dying.RemoveBlob(ctx, d, []string{repo}); !errors.Is(err, errKilled) {
		t.Fatalf("RemoveBlob on the dying store: %v, want the kill", err)
	}
	if err := dying.RemoveTag(ctx, repo, "v1"); !errors.Is(err, errKilled) {
		t.Fatalf("RemoveTag on the dying store: %v, want the kill", err)
	}
	storage.Crash(dying)

	after := newFS(t, root)
	if err := after.CleanStaging(ctx); err != nil {
		t.Fatal(err)
	}
	res, err := after.Verify(ctx, storage.VerifyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range res.Problems {
		t.Errorf("after the kill: %s", p)
	}
	if linked, err := after.BlobLinked(ctx, repo, d); err != nil || linked {
		t.Errorf("the link survived the kill (linked %v, %v): the delete did not reach it", linked, err)
	}
	if left, _ := os.ReadDir(filepath.Join(root, "stowage", "staging")); len(left) != 2 { // after's directory and lock
		t.Errorf("staging after the restart's cleanup: %d entries, want only the new store's two", len(left))
	}
}
