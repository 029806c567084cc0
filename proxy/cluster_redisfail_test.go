package proxy_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/stowage/stowage/proxy/cluster"
	"github.com/stowage/stowage/proxy/internal/testenv"
)

// TestClusterRedisServerFailsMidStorm: two replicas on one cache directory
// coordinate through a real redis-server of their own, which is killed in
// the middle of a pull storm, started again, then stopped (SIGSTOP: it
// hangs) in the middle of another and continued. No client request fails;
// while Redis is gone each blob is downloaded at most once per replica;
// once it is back the replicas coordinate again (one GET per blob). The
// latency a cold blob gains from the failure is printed, not asserted.
func TestClusterRedisServerFailsMidStorm(t *testing.T) {
	t.Parallel()
	rs := testenv.StartRedisServer(t)
	// The production default timeout, and a lease of a few seconds: with
	// less, a call slowed by a loaded machine (-race, 2 cores) trips a
	// breaker or lets a lease lapse while Redis is up, and a blob is
	// rightly downloaded twice.
	const timeout = 500 * time.Millisecond
	var leases []*cluster.RedisLeases
	newLeases := func() *cluster.RedisLeases {
		rc := cluster.NewRedisClient(rs.Addr, "", 0, timeout)
		t.Cleanup(func() { _ = rc.Close() })
		l, err := cluster.NewRedisLeases(rc, "stowage:test:", 3*time.Second,
			cluster.WithTimeout(timeout), cluster.WithBackoff(100*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		leases = append(leases, l)
		return l
	}
	a := newEnv(t, envOptions{coord: newLeases()})
	b := newEnv(t, envOptions{coord: newLeases(), shared: a.up, root: a.root})
	const size = 512 << 10
	var blobs []digest.Digest
	repo := map[digest.Digest]string{}
	for i := range 14 {
		r := fmt.Sprintf("library/redisfail%d", i)
		d := a.seedBlob(r+":v1", size, uint64(300+i))
		blobs, repo[d] = append(blobs, d), r
	}
	a.up.SetFault(testenv.SlowBlobs(64<<10, 10*time.Millisecond))

	// storm pulls each blob with two clients on each replica at once,
	// calling mid (if any) once the first upstream GET has started, and
	// returns the failures and the mean and slowest request.
	storm := func(ds []digest.Digest, mid func()) (errs []error, mean, slowest time.Duration) {
		a.up.ResetCounts()
		var (
			wg    sync.WaitGroup
			mu    sync.Mutex
			total time.Duration
		)
		for _, d := range ds {
			for i := range 4 {
				e := a
				if i%2 == 1 {
					e = b
				}
				wg.Go(func() {
					ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
					defer cancel()
					start := time.Now()
					resp := e.get(ctx, http.MethodGet, "/v2/"+repo[d]+"/blobs/"+d.String(), nil)
					defer resp.Body.Close()
					got, n, err := readAllHash(resp.Body)
					took := time.Since(start)
					mu.Lock()
					defer mu.Unlock()
					total += took
					slowest = max(slowest, took)
					if err != nil || resp.StatusCode != http.StatusOK || got != d || n != size {
						errs = append(errs, errors.Join(fmt.Errorf("%s: %s, %d bytes, %s", d, resp.Status, n, got), err))
					}
				})
			}
		}
		if mid != nil {
			waitFor(t, "the first upstream GET", func() bool { return a.up.Count(testenv.BlobGet) > 0 })
			mid()
		}
		wg.Wait()
		return errs, total / time.Duration(4*len(ds)), slowest
	}
	// coordinated waits (bounded) until both replicas use Redis again.
	coordinated := func() {
		waitFor(t, "the breakers to close", func() bool {
			for _, l := range leases {
				_, _ = l.Held(t.Context(), "probe")
				if l.Unavailable() {
					return false
				}
			}
			return true
		})
	}
	check := func(phase string, ds []digest.Digest, errs []error, lo, hi int) {
		t.Helper()
		for _, err := range errs {
			t.Errorf("%s: %v", phase, err)
		}
		if n := a.up.Count(testenv.BlobGet); n < lo || n > hi {
			t.Errorf("%s: %d upstream GETs for %d blobs, want %d to %d", phase, n, len(ds), lo, hi)
		}
	}

	errs, baseMean, baseMax := storm(blobs[:3], nil)
	check("Redis up", blobs[:3], errs, 3, 3)
	t.Logf("Redis up: cold request mean %v, slowest %v", baseMean, baseMax)

	errs, mean, slow := storm(blobs[3:6], rs.Kill)
	check("Redis killed mid-storm", blobs[3:6], errs, 3, 6)
	t.Logf("Redis killed mid-storm: cold request mean %v (+%v), slowest %v (+%v; redis.timeout %v)",
		mean, mean-baseMean, slow, slow-baseMax, timeout)

	rs.Start()
	coordinated()
	errs, _, _ = storm(blobs[6:8], nil)
	check("Redis restarted", blobs[6:8], errs, 2, 2)

	errs, mean, slow = storm(blobs[8:11], rs.Stop)
	check("Redis hanging (SIGSTOP) mid-storm", blobs[8:11], errs, 3, 6)
	t.Logf("Redis hanging mid-storm: cold request mean %v (+%v), slowest %v (+%v; redis.timeout %v)",
		mean, mean-baseMean, slow, slow-baseMax, timeout)
	for i, l := range leases {
		if !l.Unavailable() {
			t.Errorf("replica %d: breaker closed while Redis hangs", i)
		}
	}

	rs.Cont()
	coordinated()
	errs, _, _ = storm(blobs[11:], nil)
	check("Redis continued", blobs[11:], errs, 3, 3)
}
