package storage_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	driver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/opencontainers/go-digest"

	"github.com/stowage/stowage/storage"
)

// pausingRemover stops the first removal of a blob's data directory (the
// rename into the staging directory that Delete starts with) until
// release is closed: the moment between RemoveBlob's unlinking and its
// removal of the data, held open for as long as a test needs it.
type pausingRemover struct {
	driver.StorageDriver
	armed   *atomic.Bool
	reached chan struct{}
	release chan struct{}
}

func (p pausingRemover) Move(ctx context.Context, src, dst string) error {
	if strings.Contains(src, "/docker/registry/v2/blobs/") && strings.HasPrefix(dst, "/stowage/") && p.armed.CompareAndSwap(true, false) {
		close(p.reached)
		select {
		case <-p.release:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return p.StorageDriver.Move(ctx, src, dst)
}

// dangling reports whether repo links d while d's data is gone.
func dangling(t *testing.T, s *storage.Store, repo string, d digest.Digest) bool {
	t.Helper()
	linked, err := s.BlobLinked(t.Context(), repo, d)
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.StatBlob(t.Context(), d)
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		t.Fatal(err)
	}
	return linked && err != nil
}

// TestLinkDuringRemoveLeavesNoDanglingLink: a link written while eviction
// removes the same blob (its links already gone, its data not yet) must
// not outlive the data. The proxy re-links a cached blob on a hit
// (ensureBlobLinked), a prefetch or a fill links after its commit: each
// could land in that window. Before LinkBlob and RemoveBlob excluded each
// other per digest, the link was written at once and pointed at nothing
// once the removal went on.
func TestLinkDuringRemoveLeavesNoDanglingLink(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	const repo = "docker.io/library/app"
	pr := pausingRemover{armed: new(atomic.Bool), reached: make(chan struct{}), release: make(chan struct{})}
	s := newFS(t, t.TempDir(), storage.WithDriverWrapper(func(d driver.StorageDriver) driver.StorageDriver {
		pr.StorageDriver = d
		return pr
	}))
	d := commitBlob(t, s, "a layer evicted while a client pulls it")
	if err := s.LinkBlob(ctx, repo, d); err != nil {
		t.Fatal(err)
	}
	pr.armed.Store(true)
	removed := make(chan error, 1)
	go func() {
		_, err := s.RemoveBlob(ctx, d, []string{repo})
		removed <- err
	}()
	select {
	case <-pr.reached:
	case <-ctx.Done():
		t.Fatal("RemoveBlob never reached the blob's data")
	}
	if linked, err := s.BlobLinked(ctx, repo, d); err != nil || linked {
		t.Fatalf("link before the data's removal: linked %v, %v; want it removed first", linked, err)
	}
	linkErr := make(chan error, 1)
	go func() { linkErr <- s.LinkBlob(ctx, repo, d) }()
	// Give the link its chance to land in the window: without the
	// exclusion it does at once; with it, it waits for the removal.
	var lerr error
	waited := false
	select {
	case lerr = <-linkErr:
	case <-time.After(time.Second):
		waited = true
	}
	close(pr.release)
	if err := <-removed; err != nil {
		t.Fatal(err)
	}
	if waited {
		lerr = <-linkErr
	}
	t.Logf("LinkBlob waited for the removal: %v; its error: %v", waited, lerr)
	if dangling(t, s, repo, d) {
		t.Fatalf("the link written during the removal points at a removed blob (LinkBlob: %v)", lerr)
	}
	if lerr == nil {
		t.Errorf("LinkBlob of a removed blob succeeded; want ErrNotFound")
	} else if !errors.Is(lerr, storage.ErrNotFound) {
		t.Errorf("LinkBlob of a removed blob: %v, want ErrNotFound", lerr)
	}
}

// TestRemoveBlobUnlinksReposLinkedSinceTheList: eviction lists the
// linked repositories once per pass; a repository that links the blob
// after that list (a first pull of an image that shares the layer) is
// not in it. RemoveBlob must not leave that link dangling.
func TestRemoveBlobUnlinksReposLinkedSinceTheList(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s := newFS(t, t.TempDir())
	d := commitBlob(t, s, "a layer two images share")
	if err := s.LinkBlob(ctx, "docker.io/library/a", d); err != nil {
		t.Fatal(err)
	}
	repos, err := s.LinkedRepositories(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.LinkBlob(ctx, "docker.io/library/b", d); err != nil {
		t.Fatal(err)
	}
	if _, err := s.RemoveBlob(ctx, d, repos); err != nil {
		t.Fatal(err)
	}
	for _, repo := range []string{"docker.io/library/a", "docker.io/library/b"} {
		if dangling(t, s, repo, d) {
			t.Errorf("%s links the removed blob", repo)
		}
	}
}
