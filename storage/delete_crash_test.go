package storage_test

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	driver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/opencontainers/go-digest"

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

	after := restartVerified(ctx, t, root, "after the kill: ")
	if linked, err := after.BlobLinked(ctx, repo, d); err != nil || linked {
		t.Errorf("the link survived the kill (linked %v, %v): the delete did not reach it", linked, err)
	}
	if left, _ := os.ReadDir(filepath.Join(root, "stowage", "staging")); len(left) != 2 { // after's directory and lock
		t.Errorf("staging after the restart's cleanup: %d entries, want only the new store's two", len(left))
	}
}

// dyingMover dies at the first Move into the registry layout (outside the
// store's own stowage/ area), after the driver moved nothing: a SIGKILL
// just before a new blob's, link's or tag's file is renamed into place.
type dyingMover struct {
	driver.StorageDriver
}

func (d dyingMover) Move(ctx context.Context, src, dst string) error {
	if !strings.HasPrefix(dst, "/stowage/") {
		return errKilled
	}
	return d.StorageDriver.Move(ctx, src, dst)
}

// TestKilledWriteLeavesNoEmptyDirectory: a process killed just before a
// new link, blob or tag file reaches its place leaves nothing of it in the
// layout: "proxy verify" is clean and the directories are absent. (Before
// new directories were built in the staging directory and renamed whole,
// the link's directory was created first and stayed empty: "link file
// missing"; TestCrashSafety hit it now and then.)
func TestKilledWriteLeavesNoEmptyDirectory(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	root := t.TempDir()
	const repo = "docker.io/library/app"
	seed := newFS(t, root)
	d := commitBlob(t, seed, "a layer whose link is being written")
	if err := seed.Close(); err != nil {
		t.Fatal(err)
	}
	dying, err := storage.NewFilesystem(root, storage.WithDriverWrapper(func(d driver.StorageDriver) driver.StorageDriver {
		return dyingMover{StorageDriver: d}
	}))
	if err != nil {
		t.Fatal(err)
	}
	if err := dying.LinkBlob(ctx, repo, d); !errors.Is(err, errKilled) {
		t.Fatalf("LinkBlob on the dying store: %v, want the kill", err)
	}
	if err := dying.PutTag(ctx, repo, "v1", d, time.Now()); !errors.Is(err, errKilled) {
		t.Fatalf("PutTag on the dying store: %v, want the kill", err)
	}
	other := digest.FromString("a layer being committed")
	st, err := dying.NewStaging(other)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.File.WriteString("a layer being committed"); err != nil {
		t.Fatal(err)
	}
	if err := dying.CommitBlob(ctx, other, st); !errors.Is(err, errKilled) {
		t.Fatalf("CommitBlob on the dying store: %v, want the kill", err)
	}
	storage.Crash(dying)

	restartVerified(ctx, t, root, "after the kill: ")
	for _, p := range []string{
		"docker/registry/v2/repositories/docker.io",
		filepath.Dir(storage.BlobDataPath(other)),
	} {
		if _, err := os.Lstat(filepath.Join(root, filepath.FromSlash(p))); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s is there after the kill (%v): a directory was created before its file", p, err)
		}
	}
}

// TestConcurrentNewDirectories: two stores on one root (two processes)
// write links into the same new repository and commit the same new blob
// at once; every rename of a new directory that finds another process's
// already there falls back to the directory that exists. Every link lands
// and verify is clean.
func TestConcurrentNewDirectories(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	root := t.TempDir()
	a, b := newFS(t, root), newFS(t, root)
	var blobs []digest.Digest
	for i := range 16 {
		blobs = append(blobs, commitBlob(t, a, fmt.Sprintf("layer %d", i)))
	}
	const repo = "docker.io/library/fresh"
	var wg sync.WaitGroup
	errs := make(chan error, 2*len(blobs)+2)
	for _, s := range []*storage.Store{a, b} {
		for _, d := range blobs {
			wg.Go(func() { errs <- s.LinkBlob(ctx, repo, d) })
		}
		wg.Go(func() {
			const body = "the same new blob from two processes"
			d := digest.FromString(body)
			st, err := s.NewStaging(d)
			if err == nil {
				_, err = st.File.WriteString(body)
			}
			if err == nil {
				err = s.CommitBlob(ctx, d, st)
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	for _, d := range blobs {
		if ok, err := a.BlobLinked(ctx, repo, d); !ok || err != nil {
			t.Errorf("%s not linked (%v)", d, err)
		}
	}
	res, err := a.Verify(ctx, storage.VerifyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range res.Problems {
		t.Errorf("verify: %s", p)
	}
}

// restartVerified opens root again after a crash, as a restarted server
// does (its start-up cleanup included), and reports every problem verify
// finds, each after label.
func restartVerified(ctx context.Context, t *testing.T, root, label string) *storage.Store {
	t.Helper()
	after := newFS(t, root)
	if err := after.CleanStaging(ctx); err != nil {
		t.Fatal(err)
	}
	res, err := after.Verify(ctx, storage.VerifyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range res.Problems {
		t.Errorf("%s%s", label, p)
	}
	return after
}
