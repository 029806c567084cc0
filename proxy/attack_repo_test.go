package proxy_test

import (
	"context"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/distribution/distribution/v3/registry/storage/driver/filesystem"

	"github.com/stowage/stowage/proxy/internal/testenv"
	"github.com/stowage/stowage/storage"
)

// missOnceDriver hides a blob's data from the first Stat after it is
// armed: a client's look-up that ran just before another replica (or
// another repository's fill) committed the blob.
type missOnceDriver struct {
	driver.StorageDriver
	blob  string // suffix of the blob's data path
	armed atomic.Bool
}

func (d *missOnceDriver) Stat(ctx context.Context, path string) (driver.FileInfo, error) {
	if strings.HasSuffix(path, d.blob) && d.armed.CompareAndSwap(true, false) {
		return nil, driver.PathNotFoundError{Path: path}
	}
	return d.StorageDriver.Stat(ctx, path)
}

// TestAttackCachedFillAuthorisesItsRepo: the blob is cached through
// library/a; library/b does not have it upstream. A client of library/b
// whose look-up missed just before the commit starts a fill that finds
// the blob committed. It must be refused (the upstream says library/b has
// no such blob), and library/b must not be linked: a digest is no
// password, whichever way the request reaches the store.
func TestAttackCachedFillAuthorisesItsRepo(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	drv := &missOnceDriver{StorageDriver: filesystem.New(filesystem.DriverParameters{RootDirectory: root, MaxThreads: 10})}
	store, err := storage.New(drv)
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, envOptions{root: root, store: store})
	d := e.seedBlob("library/a:v1", 64<<10, 120)
	drv.blob = d.Encoded() + "/data"
	if a := e.fetch(t.Context(), http.MethodGet, "/v2/library/a/blobs/"+d.String(), nil); a.status != http.StatusOK || !a.complete() {
		t.Fatalf("pull through library/a: %s", a)
	}
	waitNoFills(t, e)
	e.up.ResetCounts()

	drv.armed.Store(true)
	a := e.fetch(t.Context(), http.MethodGet, "/v2/library/b/blobs/"+d.String(), nil)
	if a.status != http.StatusNotFound {
		t.Errorf("library/b (upstream: no such blob) after a missed look-up: %s, want 404", a)
	}
	if drv.armed.Load() {
		t.Fatal("the look-up did not miss: the test did not reach the window")
	}
	waitNoFills(t, e)
	if linked, err := e.store.BlobLinked(context.Background(), "docker.io/library/b", d); err != nil || linked {
		t.Errorf("library/b linked to a blob its upstream repository does not have (linked %v, %v)", linked, err)
	}
	if n := e.up.Count(testenv.BlobHead); n < 1 {
		t.Errorf("upstream blob HEADs = %d: library/b was never asked about", n)
	}
	if n := e.up.Count(testenv.BlobGet); n != 0 {
		t.Errorf("upstream blob GETs = %d, want 0 (the blob is cached)", n)
	}
	// The repository that has it still gets it.
	if a := e.fetch(t.Context(), http.MethodGet, "/v2/library/a/blobs/"+d.String(), nil); a.status != http.StatusOK || !a.complete() || int64(len(a.body)) != 64<<10 {
		t.Errorf("library/a afterwards: %s", a)
	}
}
