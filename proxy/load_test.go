package proxy_test

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/stowage/stowage/proxy"
)

// loadDuration is how long TestLoadLoopback runs: 10s in the normal suite,
// STOWAGE_LOAD_DURATION (e.g. "2m", bench/load.sh) for the long run.
func loadDuration(t *testing.T) time.Duration {
	if v := os.Getenv("STOWAGE_LOAD_DURATION"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("STOWAGE_LOAD_DURATION: %v", err)
		}
		return d
	}
	if testing.Short() {
		return 3 * time.Second
	}
	return 10 * time.Second
}

// openFiles counts this process's descriptors.
func openFiles(t *testing.T) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc/self/fd: %v", err)
	}
	return len(ents)
}

type usage struct {
	goroutines, files int
	heap              uint64
}

func measure(t *testing.T) usage {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return usage{goroutines: runtime.NumGoroutine(), files: openFiles(t), heap: m.HeapInuse}
}

type loadCounts struct {
	hits, misses, notFound, disconnects, retried, errors atomic.Int64
}

// TestLoadLoopback: 200 concurrent clients pull through the proxy (behind
// the client-facing wrapper, as served) for a while: cached blobs and
// manifests, blobs not yet cached, unknown blobs (404) and clients that
// hang up halfway. Every valid request succeeds with the right bytes
// (a 503 with Retry-After from the fill cap is retried, as clients do),
// and afterwards goroutines, open files and heap return to the baseline.
func TestLoadLoopback(t *testing.T) {
	const clients = 200
	const hot, cold = 30, 60
	e := newEnv(t, envOptions{})
	type blob struct {
		repo string
		d    digest.Digest
	}
	var hotBlobs, coldBlobs []blob
	for i := range hot + cold {
		repo := fmt.Sprintf("load/r%d", i)
		size := int64(16<<10 + (i%8)*32<<10)
		d := e.seedBlob(repo+":v1", size, uint64(1000+i))
		if i < hot {
			hotBlobs = append(hotBlobs, blob{repo, d})
		} else {
			coldBlobs = append(coldBlobs, blob{repo, d})
		}
	}
	big := blob{"load/big", e.seedBlob("load/big:v1", 8<<20, 999)}
	srv := httptest.NewServer(proxy.Serving(e.proxy, proxy.ServingOptions{WriteIdleTimeout: 10 * time.Second}))
	defer srv.Close()
	tr := &http.Transport{MaxIdleConnsPerHost: clients}
	client := &http.Client{Transport: tr, Timeout: 60 * time.Second}
	ctx := t.Context()

	var c loadCounts
	// get retries a 503 with Retry-After (the fill cap), as clients do.
	get := func(ctx context.Context, path string) (*http.Response, error) {
		for attempt := 0; ; attempt++ {
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+path, nil)
			if err != nil {
				return nil, err
			}
			resp, err := client.Do(req)
			if err != nil || resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" || attempt >= 50 {
				return resp, err
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			c.retried.Add(1)
			time.Sleep(50 * time.Millisecond)
		}
	}
	fail := func(format string, args ...any) {
		if c.errors.Add(1) <= 5 {
			t.Errorf(format, args...)
		}
	}
	pull := func(b blob, counter *atomic.Int64) {
		path := "/v2/" + b.repo + "/blobs/" + b.d.String()
		resp, err := get(ctx, path)
		if err != nil {
			fail("GET %s: %v", path, err)
			return
		}
		got, _, err := readAllHash(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || err != nil || got != b.d {
			fail("GET %s: status %d, err %v, digest ok %v", path, resp.StatusCode, err, got == b.d)
			return
		}
		counter.Add(1)
	}
	manifest := func(b blob) {
		resp, err := get(ctx, "/v2/"+b.repo+"/manifests/v1")
		if err != nil {
			fail("manifest %s: %v", b.repo, err)
			return
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			fail("manifest %s: status %d", b.repo, resp.StatusCode)
			return
		}
		c.hits.Add(1)
	}
	notFound := func(rng *rand.Rand) {
		d := digest.FromString(fmt.Sprint(rng.Int64()))
		resp, err := get(ctx, "/v2/load/r0/blobs/"+d.String())
		if err != nil {
			fail("404 GET: %v", err)
			return
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			fail("unknown blob: status %d, want 404", resp.StatusCode)
			return
		}
		c.notFound.Add(1)
	}
	disconnect := func() {
		dctx, cancel := context.WithCancel(ctx)
		defer cancel()
		resp, err := get(dctx, "/v2/"+big.repo+"/blobs/"+big.d.String())
		if err != nil {
			fail("disconnect GET: %v", err)
			return
		}
		_, _ = io.CopyN(io.Discard, resp.Body, 64<<10)
		cancel()
		resp.Body.Close()
		c.disconnects.Add(1)
	}

	run := func(d time.Duration, seed uint64) {
		deadline := time.Now().Add(d)
		var wg sync.WaitGroup
		for i := range clients {
			wg.Go(func() {
				rng := rand.New(rand.NewPCG(seed, uint64(i)))
				for time.Now().Before(deadline) && ctx.Err() == nil {
					switch n := rng.IntN(100); {
					case n < 50:
						pull(hotBlobs[rng.IntN(len(hotBlobs))], &c.hits)
					case n < 65:
						manifest(hotBlobs[rng.IntN(len(hotBlobs))])
					case n < 80:
						pull(coldBlobs[rng.IntN(len(coldBlobs))], &c.misses)
					case n < 92:
						notFound(rng)
					default:
						disconnect()
					}
				}
			})
		}
		wg.Wait()
	}
	// Warm the hot set and the big blob, and the connection pools, then
	// take the baseline.
	for _, b := range append(hotBlobs, big) {
		pull(b, &c.hits)
	}
	run(time.Second, 1)
	tr.CloseIdleConnections()
	time.Sleep(200 * time.Millisecond)
	base := measure(t)

	start := time.Now()
	c = loadCounts{}
	// A probe, as the kubelet's: /healthz must answer within its timeout
	// all along.
	probeStop, probeDone := make(chan struct{}), make(chan int)
	go func() {
		probe := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
		failed := 0
		for {
			select {
			case <-probeStop:
				probeDone <- failed
				return
			case <-time.After(200 * time.Millisecond):
			}
			resp, err := probe.Get(srv.URL + "/healthz")
			if err != nil {
				failed++
				continue
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				failed++
			}
		}
	}()
	run(loadDuration(t), 2)
	elapsed := time.Since(start)
	close(probeStop)
	if failed := <-probeDone; failed > 0 {
		t.Errorf("/healthz failed %d times under load", failed)
	}
	total := c.hits.Load() + c.misses.Load() + c.notFound.Load() + c.disconnects.Load()
	t.Logf("load: %d clients for %s: %d requests (%.0f/s): hits %d, cold-set pulls (misses until cached) %d, 404 %d, disconnects %d, 503-retried %d, errors %d",
		clients, elapsed.Round(time.Millisecond), total, float64(total)/elapsed.Seconds(),
		c.hits.Load(), c.misses.Load(), c.notFound.Load(), c.disconnects.Load(), c.retried.Load(), c.errors.Load())
	if n := c.errors.Load(); n > 0 {
		t.Fatalf("%d valid requests failed", n)
	}

	tr.CloseIdleConnections()
	var now usage
	ok := false
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		now = measure(t)
		if now.goroutines <= base.goroutines+20 && now.files <= base.files+20 && now.heap <= base.heap+64<<20 {
			ok = true
			break
		}
	}
	t.Logf("baseline: goroutines %d, open files %d, heap %d KiB; after: goroutines %d, open files %d, heap %d KiB",
		base.goroutines, base.files, base.heap>>10, now.goroutines, now.files, now.heap>>10)
	if !ok {
		t.Fatal("goroutines, open files or heap did not return to the baseline")
	}
}
