package proxy_test

import (
	"errors"
	"io/fs"
	"net/http"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stowage/stowage/proxy"
	"github.com/stowage/stowage/proxy/cluster"
	"github.com/stowage/stowage/proxy/internal/testenv"
)

// redisLeases connects to the real Redis on 127.0.0.1:6379 (started by
// .ci/run); outside CI a missing Redis skips the test.
func redisLeases(t *testing.T) (proxy.Coordinator, proxy.Coordinator) {
	t.Helper()
	c, prefix := testenv.Redis(t)
	a, err := cluster.NewRedisLeases(c, prefix, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	b, err := cluster.NewRedisLeases(c, prefix, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return a, b
}

// TestClusterOneDownload: two replicas share one cache directory and
// coordinate through Redis; clients of both pulling one cold blob cost
// exactly one upstream GET, and everyone gets the verified bytes.
func TestClusterOneDownload(t *testing.T) {
	t.Parallel()
	ca, cb := redisLeases(t)
	const size = 8 << 20
	a := newEnv(t, envOptions{coord: ca})
	b := newEnv(t, envOptions{coord: cb, shared: a.up, root: a.root})
	d := a.seedBlob("library/shared:v1", size, 21)
	a.up.SetFault(testenv.SlowBlobs(512<<10, 20*time.Millisecond))
	a.up.ResetCounts()

	var wg sync.WaitGroup
	errs := make(chan error, 10)
	for i := range 10 {
		e := a
		if i%2 == 1 {
			e = b
		}
		wg.Go(func() {
			resp := e.get(t.Context(), http.MethodGet, "/v2/library/shared/blobs/"+d.String(), nil)
			defer resp.Body.Close()
			got, n, err := readAllHash(resp.Body)
			if err != nil || resp.StatusCode != http.StatusOK || got.String() != d.String() || n != size {
				errs <- errors.Join(err, errors.New(resp.Status+" "+got.String()))
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := a.up.Count(testenv.BlobGet); n != 1 {
		t.Fatalf("upstream blob GETs across two replicas = %d, want 1", n)
	}
	// The waiting replica's unused staging file is gone too (each replica
	// keeps only its own staging directory and lock file).
	waitFor(t, "the staging directory to empty", func() bool {
		n := 0
		err := filepath.WalkDir(filepath.Join(a.root, "stowage", "staging"), func(p string, de fs.DirEntry, err error) error {
			if err == nil && !de.IsDir() && filepath.Ext(p) != ".lock" {
				n++
			}
			return err
		})
		return err == nil && n == 0
	})
}
