package proxy_test

import (
	"bytes"
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/stowage/stowage/proxy/internal/testenv"
	"github.com/stowage/stowage/storage/storagetest"
)

// TestHitDuringEvictionLeavesNoDanglingLink: a cache hit that arrives
// while an eviction removes the same blob (its _layers link already gone,
// its data not yet) re-links the blob for its repository. Before the link
// and the removal excluded each other, the hit wrote the link at once,
// served the old bytes from its open file, and the removal then took the
// data: the repository linked a blob that was gone, which a stock
// registry on the same root fails on and "proxy verify" reports. Now the
// link waits for the removal, finds no blob, and the hit becomes a miss
// that fetches the blob again: served whole, committed and linked.
func TestHitDuringEvictionLeavesNoDanglingLink(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	const size = 256 << 10
	root, store, fd := faultStore(t)
	e := newEnv(t, envOptions{root: root, store: store})
	d, blob := e.seedRead("library/hitrace:v1", size, 141)
	const cacheRepo = "docker.io/library/hitrace"
	path := "/v2/library/hitrace/blobs/" + d.String()
	if a := e.fetch(ctx, http.MethodGet, path, nil); !a.complete() || !bytes.Equal(a.body, blob) {
		t.Fatalf("first pull: %s", a)
	}
	if linked, err := store.BlobLinked(ctx, cacheRepo, d); err != nil || !linked {
		t.Fatalf("after the first pull: linked %v, %v", linked, err)
	}
	e.up.ResetCounts()

	// The eviction: links go, then the data's move into the trash waits.
	moves := fd.Calls(storagetest.OpMove)
	fd.Inject(storagetest.Fault{Op: storagetest.OpMove, Path: "/blobs/sha256/" + d.Encoded()[:2] + "/" + d.Encoded(), Delay: 2 * time.Second, Count: 1})
	removed := make(chan error, 1)
	go func() {
		_, err := store.RemoveBlob(ctx, d, []string{cacheRepo})
		removed <- err
	}()
	waitFor(t, "the removal to reach the blob's data", func() bool { return fd.Calls(storagetest.OpMove) > moves })
	if linked, err := store.BlobLinked(ctx, cacheRepo, d); err != nil || linked {
		t.Fatalf("during the removal: linked %v, %v; want the link gone first", linked, err)
	}

	a := e.fetch(ctx, http.MethodGet, path, nil)
	if err := <-removed; err != nil {
		t.Fatal(err)
	}
	neverWrong(t, "client", a, blob, "")
	if !a.complete() {
		t.Errorf("hit during the eviction: %s, want the blob", a)
	}
	linked, err := store.BlobLinked(ctx, cacheRepo, d)
	if err != nil {
		t.Fatal(err)
	}
	_, statErr := store.StatBlob(ctx, d)
	t.Logf("after: linked %v, blob: %v, upstream blob GETs %d", linked, statErr, e.up.Count(testenv.BlobGet))
	if linked && statErr != nil {
		t.Fatalf("%s links %s, whose data is gone (%v)", cacheRepo, d, statErr)
	}
	if a := e.fetch(ctx, http.MethodGet, path, nil); !a.complete() || !bytes.Equal(a.body, blob) {
		t.Errorf("pull after the eviction: %s", a)
	}
	if linked, err := store.BlobLinked(ctx, cacheRepo, d); err != nil || !linked {
		t.Errorf("after the pulls: linked %v, %v; want the blob linked again", linked, err)
	}
	if _, err := store.StatBlob(ctx, d); err != nil {
		t.Errorf("after the pulls: %v; want the blob cached again", err)
	}
}

// TestHitFullDiskLinkServes: a blob cached for one repository is pulled
// through another; the upstream confirms that repository has it, and the
// _layers link for it cannot be written because the disk is full. The
// client still gets the verified cached blob (the cache's own failure
// never fails a client the cache can serve), the link is left for a later
// pull, and eviction is asked to make room.
func TestHitFullDiskLinkServes(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	const size = 128 << 10
	root, store, fd := faultStore(t)
	e := newEnv(t, envOptions{root: root, store: store})
	d, blob := e.seedRead("library/linkfull-a:v1", size, 142)
	e.seedBlob("library/linkfull-b:v1", size, 142) // the same layer in another repository
	if a := e.fetch(ctx, http.MethodGet, "/v2/library/linkfull-a/blobs/"+d.String(), nil); !a.complete() || !bytes.Equal(a.body, blob) {
		t.Fatalf("first pull: %s", a)
	}
	fd.Inject(storagetest.Fault{Op: storagetest.OpWrite, Path: "/stowage/staging/", Err: storagetest.ErrNoSpace})
	a := e.fetch(ctx, http.MethodGet, "/v2/library/linkfull-b/blobs/"+d.String(), nil)
	if !a.complete() || !bytes.Equal(a.body, blob) {
		t.Errorf("hit through another repository with the disk full: %s, want the cached blob", a)
	}
	if linked, err := store.BlobLinked(ctx, "docker.io/library/linkfull-b", d); err != nil || linked {
		t.Errorf("linked %v, %v with the disk full", linked, err)
	}
}
