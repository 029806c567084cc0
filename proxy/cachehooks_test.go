package proxy_test

import (
	"context"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/stowage/stowage/proxy/internal/testenv"
)

// hookLog records the cache hooks the proxy calls (the eviction engine's
// usage index in production).
type hookLog struct {
	mu        sync.Mutex
	added     map[digest.Digest]int64
	manifests map[digest.Digest]int64
	touched   map[digest.Digest]int
}

func newHookLog() *hookLog {
	return &hookLog{added: map[digest.Digest]int64{}, manifests: map[digest.Digest]int64{}, touched: map[digest.Digest]int{}}
}

func (h *hookLog) Added(d digest.Digest, n int64) { h.mu.Lock(); h.added[d] = n; h.mu.Unlock() }
func (h *hookLog) ManifestAdded(d digest.Digest, n int64) {
	h.mu.Lock()
	h.manifests[d] = n
	h.mu.Unlock()
}
func (h *hookLog) Touched(d digest.Digest) { h.mu.Lock(); h.touched[d]++; h.mu.Unlock() }
func (h *hookLog) Removed(digest.Digest)   {}
func (h *hookLog) Trigger()                {}

// TestCacheHooksAndInUse: a committed blob is reported with its size, a
// stored manifest with its size, every cache hit as a touch; a blob is in
// use while its fill runs and while a hit streams it, and not after.
func TestCacheHooksAndInUse(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	hooks := newHookLog()
	e.proxy.SetCacheHooks(hooks)
	const size = 2 << 20
	d := e.seedBlob("library/hooks:v1", size, 7)

	e.up.SetFault(testenv.SlowBlobs(64<<10, 20*time.Millisecond))
	resp := e.get(context.Background(), http.MethodGet, "/v2/library/hooks/blobs/"+d.String(), nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("cold GET: %d", resp.StatusCode)
	}
	buf := make([]byte, 1024)
	if _, err := io.ReadFull(resp.Body, buf); err != nil {
		t.Fatal(err)
	}
	if !e.proxy.InUse(d) {
		t.Error("a blob whose fill runs is not in use")
	}
	got, n, err := readAllHash(resp.Body)
	resp.Body.Close()
	if err != nil || n != size-1024 || got == "" {
		t.Fatalf("cold body: %d bytes, %v", n, err)
	}
	e.up.SetFault(nil)
	waitFor(t, "the fill to end", func() bool { return !e.proxy.InUse(d) })
	hooks.mu.Lock()
	if hooks.added[d] != size {
		t.Errorf("Added(%s) = %d, want %d", d, hooks.added[d], size)
	}
	hooks.mu.Unlock()

	// A hit: touched, in use while it streams. The big blob cannot fit in
	// the loopback socket buffers, so the handler streams until the client
	// reads on.
	big := e.seedBlob("library/hooks:big", 64<<20, 8)
	for i := range 2 {
		resp = e.get(context.Background(), http.MethodGet, "/v2/library/hooks/blobs/"+big.String(), nil)
		if _, err := io.ReadFull(resp.Body, buf); err != nil {
			t.Fatal(err)
		}
		if i == 1 && !e.proxy.InUse(big) {
			t.Error("a blob streaming from the cache is not in use")
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		waitFor(t, "the response to end", func() bool { return !e.proxy.InUse(big) })
	}
	resp = e.get(context.Background(), http.MethodGet, "/v2/library/hooks/blobs/"+d.String(), nil)
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()

	// The manifest: stored once (ManifestAdded), every later answer a touch.
	for range 2 {
		resp := e.get(context.Background(), http.MethodGet, "/v2/library/hooks/manifests/v1", nil)
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("manifest: %d", resp.StatusCode)
		}
	}
	hooks.mu.Lock()
	defer hooks.mu.Unlock()
	if hooks.touched[d] != 1 {
		t.Errorf("blob touched %d times, want 1 (the hit)", hooks.touched[d])
	}
	if len(hooks.manifests) != 1 {
		t.Fatalf("manifests added: %v", hooks.manifests)
	}
	for md, n := range hooks.manifests {
		if n <= 0 || hooks.touched[md] != 2 {
			t.Errorf("manifest %s: added with %d bytes, touched %d times; want >0 and 2", md, n, hooks.touched[md])
		}
	}
}
