package proxy_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/stowage/stowage/proxy/internal/testenv"
	"github.com/stowage/stowage/storage"
	"github.com/stowage/stowage/storage/storagetest"
)

// pullImage pulls repo:tag through the proxy as a client does (manifest,
// config, layers), checks every blob's digest and returns the manifest's
// and the blobs' digests.
func (e *env) pullImage(t *testing.T, repo, tag string) []digest.Digest {
	t.Helper()
	return pullFrom(t, e.srv.URL, repo, tag)
}

// pullFrom pulls repo:tag from the registry at base (a proxy or a stock
// registry), checking every blob's digest.
func pullFrom(t *testing.T, base, repo, tag string) []digest.Digest {
	t.Helper()
	get := func(path string, hdr http.Header) *http.Response {
		req, err := http.NewRequest(http.MethodGet, base+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header = hdr
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		return resp
	}
	resp := get("/v2/"+repo+"/manifests/"+tag, http.Header{"Accept": {"application/vnd.docker.distribution.manifest.v2+json"}})
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Errorf("manifest %s:%s: %d %v", repo, tag, resp.StatusCode, err)
		return nil
	}
	var m struct {
		Config struct {
			Digest digest.Digest `json:"digest"`
		} `json:"config"`
		Layers []struct {
			Digest digest.Digest `json:"digest"`
			Size   int64         `json:"size"`
		} `json:"layers"`
	}
	if err := json.Unmarshal(body, &m); err != nil {
		t.Errorf("manifest %s:%s: %v", repo, tag, err)
		return nil
	}
	out := []digest.Digest{digest.FromBytes(body), m.Config.Digest}
	for _, l := range m.Layers {
		out = append(out, l.Digest)
	}
	for _, d := range out[1:] {
		resp := get("/v2/"+repo+"/blobs/"+d.String(), http.Header{})
		got, _, err := readAllHash(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || err != nil || got != d {
			t.Errorf("blob %s of %s:%s: status %d, hash %s, err %v", d, repo, tag, resp.StatusCode, got, err)
		}
	}
	return out
}

// diskUsage sums the sizes of the committed blobs on disk.
func diskUsage(t *testing.T, s *storage.Store) int64 {
	t.Helper()
	var n int64
	if err := s.WalkBlobs(context.Background(), func(b storage.BlobRecord) error { n += b.Size; return nil }); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestEvictionUnderCapWithConcurrentPulls: a 64 MiB cap, a pinned image
// and a 32 MiB blob streaming to a slow client (with a small fixed receive
// buffer, so the response stays in use), then
// twenty images pulled by four clients at once. Eviction runs as in
// production (Run, triggered by commits). The cap holds once the pulls end
// (and within the blobs of the concurrent pulls meanwhile); the pinned
// image and the streaming blob survive; the streaming client gets the
// right bytes; evicted layers refetch with the right digest; a stock
// registry on the same root serves the images left whole (about 21 MiB
// above what is pinned or streaming stays under the low watermark, so
// several of the last images keep both their config and their layer);
// with the upstream stopped, the pinned image still pulls.
func TestEvictionUnderCapWithConcurrentPulls(t *testing.T) {
	const (
		mib     = int64(1) << 20
		limit   = 64 * mib
		layer   = 2 * mib
		images  = 20
		workers = 4
	)
	e, eng := newEvictEnv(t, limit)
	ctx := context.Background()
	runCtx, stopEngine := context.WithCancel(ctx)
	ran := make(chan struct{})
	go func() { defer close(ran); _ = eng.Run(runCtx) }()
	t.Cleanup(func() { stopEngine(); <-ran })

	pinnedImg, _ := testenv.RawBlobImage(t, 4*mib, 60)
	e.up.Push(t, "library/pinned:v1", pinnedImg)
	for i := range images {
		img, _ := testenv.RawBlobImage(t, layer, uint64(100+i))
		e.up.Push(t, fmt.Sprintf("library/img%d:v1", i), img)
	}
	big := e.seedBlob("library/big:v1", 32*mib, 61)

	pinned := e.pullImage(t, "library/pinned", "v1")
	if err := e.store.PutPin(ctx, storage.Pin{Name: "base", Updated: time.Now(), Blobs: pinned}); err != nil {
		t.Fatal(err)
	}
	e.pullBlob(t, "library/big", big, 32*mib)

	// A slow client holds a hit of the big blob open: in use, the least
	// recently used unpinned blob, and never evicted while it streams.
	// Its receive buffer is fixed small: with the kernel's autotuning
	// (tcp_rmem up to 32 MiB here) the socket buffers could take the
	// whole blob, the response would end, and the blob would rightly be
	// evictable.
	slowClient := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetReadBuffer(64 << 10)
		}
		return c, err
	}}}
	t.Cleanup(slowClient.CloseIdleConnections)
	slowReq, err := http.NewRequestWithContext(ctx, http.MethodGet, e.srv.URL+"/v2/library/big/blobs/"+big.String(), nil)
	if err != nil {
		t.Fatal(err)
	}
	slow, err := slowClient.Do(slowReq)
	if err != nil {
		t.Fatal(err)
	}
	head := make([]byte, 1024)
	if _, err := io.ReadFull(slow.Body, head); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the big blob in use", func() bool { return e.proxy.InUse(big) })

	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		maxSeen  int64
		pulled   = map[int][]digest.Digest{}
		jobs     = make(chan int)
		sampling = make(chan struct{})
	)
	go func() {
		defer close(sampling)
		for runCtx.Err() == nil {
			used, _ := eng.Index().Usage()
			mu.Lock()
			maxSeen = max(maxSeen, used)
			done := len(pulled) == images
			mu.Unlock()
			if done {
				return
			}
			time.Sleep(time.Millisecond)
		}
	}()
	for range workers {
		wg.Go(func() {
			for i := range jobs {
				ds := e.pullImage(t, fmt.Sprintf("library/img%d", i), "v1")
				mu.Lock()
				pulled[i] = ds
				mu.Unlock()
			}
		})
	}
	for i := range images {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	<-sampling

	waitFor(t, "usage under the cap", func() bool { used, _ := eng.Index().Usage(); return used <= limit })
	if n := diskUsage(t, e.store); n > limit+layer {
		t.Errorf("%d bytes of blobs on disk, cap %d (+ one blob)", n, limit)
	}
	// Commits race the passes they trigger: at most the concurrent pulls'
	// blobs go over before a pass catches up.
	if maxSeen > limit+workers*layer {
		t.Errorf("usage reached %d during the pulls, cap %d", maxSeen, limit)
	}
	for _, d := range append(pinned, big) {
		if _, err := e.store.StatBlob(ctx, d); err != nil {
			t.Errorf("pinned or streaming blob %s evicted: %v", d, err)
		}
	}
	got, n, err := readAllHash(io.MultiReader(bytesReader(head), slow.Body))
	slow.Body.Close()
	if err != nil || got != big || n != 32*mib {
		t.Fatalf("streaming client: %d bytes hashing to %s (%v)", n, got, err)
	}

	// Evicted layers come back from the upstream, right.
	wholeImages := func() (evicted, whole []int) {
		for i := range images {
			gone := false
			for _, d := range pulled[i][1:] {
				if _, err := e.store.StatBlob(ctx, d); errors.Is(err, storage.ErrNotFound) {
					gone = true
				}
			}
			if gone {
				evicted = append(evicted, i)
			} else {
				whole = append(whole, i)
			}
		}
		return evicted, whole
	}
	evicted, whole := wholeImages()
	if len(evicted) == 0 || len(whole) == 0 {
		t.Fatalf("evicted images %v, whole %v: want some of each", evicted, whole)
	}
	e.up.ResetCounts()
	e.pullImage(t, fmt.Sprintf("library/img%d", evicted[0]), "v1")
	if e.up.Count(testenv.BlobGet) == 0 {
		t.Error("an evicted image pulled without fetching from the upstream")
	}
	waitFor(t, "usage under the cap", func() bool { used, _ := eng.Index().Usage(); return used <= limit })

	// A stock registry on the same root serves what is left whole (the
	// engine stopped, so nothing goes meanwhile).
	stopEngine()
	<-ran
	_, whole = wholeImages()
	if len(whole) == 0 {
		t.Fatal("no image left whole")
	}
	stock := storagetest.StartStockRegistry(t, e.root)
	for _, repo := range []string{"docker.io/library/pinned", fmt.Sprintf("docker.io/library/img%d", whole[0])} {
		if got := pullFrom(t, "http://"+stock.Host, repo, "v1"); len(got) == 0 {
			t.Errorf("stock registry: %s:v1 did not pull", repo)
		}
	}

	// The upstream goes away: the pinned image still pulls.
	e.up.Close()
	e.pullImage(t, "library/pinned", "v1")
}

func bytesReader(b []byte) io.Reader { return &sliceReader{b: b} }

type sliceReader struct{ b []byte }

func (r *sliceReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	n := copy(p, r.b)
	r.b = r.b[n:]
	return n, nil
}
