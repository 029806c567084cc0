package proxy_test

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/distribution/distribution/v3/registry/storage/driver/filesystem"
	"github.com/opencontainers/go-digest"

	"github.com/stowage/stowage/proxy/internal/testenv"
	"github.com/stowage/stowage/storage"
)

// windowDriver widens the window of review 1.4: the first Stat that finds
// the blob's data (the waiting fill noticing another replica's commit)
// waits for the test, and the data can be hidden from Stat (a client whose
// look-up missed just before that commit).
type windowDriver struct {
	driver.StorageDriver
	blob    string // suffix of the blob's data path
	hide    atomic.Bool
	linking chan struct{} // closed when the first Stat finds the blob
	gate    chan struct{} // that Stat waits for it
	once    sync.Once
}

func (d *windowDriver) Stat(ctx context.Context, path string) (driver.FileInfo, error) {
	if !strings.HasSuffix(path, d.blob) {
		return d.StorageDriver.Stat(ctx, path)
	}
	if d.hide.Load() {
		return nil, driver.PathNotFoundError{Path: path}
	}
	fi, err := d.StorageDriver.Stat(ctx, path)
	if err != nil {
		return fi, err
	}
	first := false
	d.once.Do(func() { first = true; close(d.linking) })
	if first {
		select {
		case <-d.gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return fi, nil
}

// TestCachedFillWindowDoesNotTruncate (review 1.4): a fill that finds the
// blob committed by another replica must not publish a size before it is
// done; a client joining while it finds the blob gets the whole blob, not
// a 200 cut to 0 bytes. The outcome is counted as "cached". (The fill
// writes no link any more: each joiner authorises its own repository, see
// TestAttackCachedFillAuthorisesItsRepo.)
func TestCachedFillWindowDoesNotTruncate(t *testing.T) {
	t.Parallel()
	ca, cb := redisLeases(t)
	root := t.TempDir()
	drv := &windowDriver{StorageDriver: filesystem.New(filesystem.DriverParameters{RootDirectory: root, MaxThreads: 10}),
		linking: make(chan struct{}), gate: make(chan struct{})}
	var openGate sync.Once
	t.Cleanup(func() { openGate.Do(func() { close(drv.gate) }) })
	store, err := storage.New(drv)
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, envOptions{coord: ca, root: root, store: store})
	const size = 1 << 20
	d := e.seedBlob("library/window:v1", size, 43)
	drv.blob = d.Encoded() + "/data"
	blob := e.blobBytes(t, "library/window", d)

	// Another replica holds the fill's lease.
	rel, ok, err := cb.TryAcquire(t.Context(), "fill:"+d.String())
	if err != nil || !ok {
		t.Fatalf("lease: %v %v", ok, err)
	}
	type result struct {
		status int
		got    digest.Digest
		n      int64
		err    error
	}
	get := func(out chan<- result) {
		resp := e.get(context.Background(), http.MethodGet, "/v2/library/window/blobs/"+d.String(), nil)
		defer resp.Body.Close()
		got, n, err := readAllHash(resp.Body)
		out <- result{resp.StatusCode, got, n, err}
	}
	x, y := make(chan result, 1), make(chan result, 1)
	go get(x)
	waitFor(t, "the fill to wait for the lease", func() bool { return len(e.proxy.Fills()) == 1 })

	// The other replica commits the blob and lets go of the lease.
	other, err := storage.NewFilesystem(root)
	if err != nil {
		t.Fatal(err)
	}
	st, err := other.NewStaging(d)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.File.Write(blob); err != nil {
		t.Fatal(err)
	}
	if err := other.CommitBlob(t.Context(), d, st); err != nil {
		t.Fatal(err)
	}
	_ = st.File.Close()
	rel()

	<-drv.linking // the fill is finding the blob committed
	drv.hide.Store(true)
	go get(y)
	waitFor(t, "the second client to join the fill", func() bool {
		f := e.proxy.Fills()
		return len(f) == 1 && f[0].Clients == 2
	})
	drv.hide.Store(false)
	openGate.Do(func() { close(drv.gate) })
	for name, ch := range map[string]chan result{"first": x, "second": y} {
		r := <-ch
		if r.status != http.StatusOK || r.err != nil || r.got != d || r.n != size {
			t.Errorf("%s client: %d, %d bytes %s, %v", name, r.status, r.n, r.got, r.err)
		}
	}
	if m := e.metrics(t); !strings.Contains(m, `stowage_fills_total{outcome="cached"} 1`) {
		t.Error("the fill is not counted as cached")
	}
}

// vanishDriver shows a blob's data to the first Stat that finds it once
// armed, then hides it:
// a blob another replica committed that is gone again when looked at next.
type vanishDriver struct {
	driver.StorageDriver
	blob  string
	armed atomic.Bool
	shown atomic.Bool
}

func (d *vanishDriver) Stat(ctx context.Context, path string) (driver.FileInfo, error) {
	fi, err := d.StorageDriver.Stat(ctx, path)
	if err == nil && d.armed.Load() && strings.HasSuffix(path, d.blob) && !d.shown.CompareAndSwap(false, true) {
		return nil, driver.PathNotFoundError{Path: path}
	}
	return fi, err
}

// TestWaitedBlobVanished (review 1.8): the lease holder's commit is seen
// once and then gone; the waiting fill downloads the blob itself instead
// of reporting success for a blob nobody has.
func TestWaitedBlobVanished(t *testing.T) {
	t.Parallel()
	ca, cb := redisLeases(t)
	root := t.TempDir()
	drv := &vanishDriver{StorageDriver: filesystem.New(filesystem.DriverParameters{RootDirectory: root, MaxThreads: 10})}
	store, err := storage.New(drv)
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, envOptions{coord: ca, root: root, store: store})
	const size = 1 << 20
	d := e.seedBlob("library/vanish:v1", size, 46)
	drv.blob = d.Encoded() + "/data"
	blob := e.blobBytes(t, "library/vanish", d)
	e.up.ResetCounts()
	rel, ok, err := cb.TryAcquire(t.Context(), "fill:"+d.String())
	if err != nil || !ok {
		t.Fatalf("lease: %v %v", ok, err)
	}
	type result struct {
		status int
		got    digest.Digest
		n      int64
		err    error
	}
	x := make(chan result, 1)
	go func() {
		resp := e.get(context.Background(), http.MethodGet, "/v2/library/vanish/blobs/"+d.String(), nil)
		defer resp.Body.Close()
		got, n, err := readAllHash(resp.Body)
		x <- result{resp.StatusCode, got, n, err}
	}()
	waitFor(t, "the fill to wait for the lease", func() bool { return len(e.proxy.Fills()) == 1 })
	other, err := storage.NewFilesystem(root)
	if err != nil {
		t.Fatal(err)
	}
	st, err := other.NewStaging(d)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.File.Write(blob); err != nil {
		t.Fatal(err)
	}
	drv.armed.Store(true)
	if err := other.CommitBlob(t.Context(), d, st); err != nil {
		t.Fatal(err)
	}
	_ = st.File.Close()
	rel()
	r := <-x
	if r.status != http.StatusOK || r.err != nil || r.got != d || r.n != size {
		t.Fatalf("client: %d, %d bytes %s, %v", r.status, r.n, r.got, r.err)
	}
	if n := e.up.Count(testenv.BlobGet); n != 1 {
		t.Fatalf("upstream blob GETs = %d, want 1 (the waiting fill downloads itself)", n)
	}
}
