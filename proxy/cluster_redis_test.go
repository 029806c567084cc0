package proxy_test

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/stowage/stowage/proxy/cluster"
	"github.com/stowage/stowage/proxy/internal/testenv"
)

// TestClusterRedisHangsMidStorm: two replicas on one cache directory
// coordinate through the real Redis, reached through a connection that can
// be frozen (a SIGSTOPped or partitioned Redis). Pulls before the freeze
// cost one upstream GET per blob; pulls while Redis hangs all succeed (0
// failed requests) with at most one download per replica; after the thaw
// coordination resumes (one GET per blob again).
func TestClusterRedisHangsMidStorm(t *testing.T) {
	t.Parallel()
	probe := cluster.NewRedisClient("127.0.0.1:6379", "", 0, 2*time.Second)
	defer probe.Close()
	if err := probe.Ping(t.Context()).Err(); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("redis on 127.0.0.1:6379: %v", err)
		}
		t.Skipf("redis on 127.0.0.1:6379: %v", err)
	}
	fz := testenv.NewFreezableTCP(t, "127.0.0.1:6379")
	var id [8]byte
	_, _ = rand.Read(id[:])
	prefix := "stowage-test-" + hex.EncodeToString(id[:]) + ":"
	leases := func() *cluster.RedisLeases {
		rc := cluster.NewRedisClient(fz.Addr(), "", 0, 200*time.Millisecond)
		t.Cleanup(func() { _ = rc.Close() })
		l, err := cluster.NewRedisLeases(rc, prefix, 5*time.Second,
			cluster.WithTimeout(200*time.Millisecond), cluster.WithBackoff(100*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	la, lb := leases(), leases()
	a := newEnv(t, envOptions{coord: la})
	b := newEnv(t, envOptions{coord: lb, shared: a.up, root: a.root})
	const size = 512 << 10
	var blobs []digest.Digest
	repo := map[digest.Digest]string{}
	for i := range 9 {
		r := fmt.Sprintf("library/storm%d", i)
		d := a.seedBlob(r+":v1", size, uint64(100+i))
		blobs, repo[d] = append(blobs, d), r
	}
	a.up.SetFault(testenv.SlowBlobs(64<<10, 5*time.Millisecond))

	// storm pulls each blob with two clients on each replica at once and
	// returns the failures and the slowest request.
	storm := func(ds []digest.Digest) ([]error, time.Duration) {
		var (
			wg      sync.WaitGroup
			mu      sync.Mutex
			errs    []error
			slowest time.Duration
		)
		for _, d := range ds {
			for i := range 4 {
				e := a
				if i%2 == 1 {
					e = b
				}
				wg.Go(func() {
					start := time.Now()
					resp := e.get(t.Context(), http.MethodGet, "/v2/"+repo[d]+"/blobs/"+d.String(), nil)
					defer resp.Body.Close()
					got, n, err := readAllHash(resp.Body)
					mu.Lock()
					defer mu.Unlock()
					slowest = max(slowest, time.Since(start))
					if err != nil || resp.StatusCode != http.StatusOK || got != d || n != size {
						errs = append(errs, errors.Join(fmt.Errorf("%s: %s, %d bytes, %s", d, resp.Status, n, got), err))
					}
				})
			}
		}
		wg.Wait()
		return errs, slowest
	}

	a.up.ResetCounts()
	errs, slow := storm(blobs[:4])
	for _, err := range errs {
		t.Error(err)
	}
	if n := a.up.Count(testenv.BlobGet); n != 4 {
		t.Errorf("Redis up: %d upstream GETs for 4 blobs, want 4", n)
	}
	t.Logf("Redis up: slowest of 16 cold requests %v", slow)

	fz.Freeze()
	a.up.ResetCounts()
	errs, slow = storm(blobs[4:8])
	for _, err := range errs {
		t.Errorf("Redis hanging: %v", err)
	}
	if n := a.up.Count(testenv.BlobGet); n < 4 || n > 8 {
		t.Errorf("Redis hanging: %d upstream GETs for 4 blobs, want 4 to 8 (at most one per replica)", n)
	}
	if !la.Unavailable() || !lb.Unavailable() {
		t.Errorf("breakers after the freeze: a %v, b %v; want both open", la.Unavailable(), lb.Unavailable())
	}
	t.Logf("Redis hanging: slowest of 16 cold requests %v (redis.timeout 200ms)", slow)

	fz.Thaw()
	time.Sleep(150 * time.Millisecond) // past the breakers' 100ms window
	a.up.ResetCounts()
	errs, _ = storm(blobs[8:])
	for _, err := range errs {
		t.Errorf("Redis back: %v", err)
	}
	if n := a.up.Count(testenv.BlobGet); n != 1 {
		t.Errorf("Redis back: %d upstream GETs for 1 blob, want 1 (coordination resumed)", n)
	}
	if la.Unavailable() || lb.Unavailable() {
		t.Errorf("breakers after the thaw: a %v, b %v; want both closed", la.Unavailable(), lb.Unavailable())
	}
}
