package main

import (
	"context"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/stowage/stowage/config"
)

// gatedBlobs counts the upstream's blob GETs per path; while held, a GET
// waits until a second GET of the same path arrives (or a bound passes),
// so that two downloads that do not wait on each other are seen in flight
// together.
type gatedBlobs struct {
	mu       sync.Mutex
	hold     bool
	gets     map[string]int
	together map[string]bool
	second   map[string]chan struct{}
	released map[string]bool // the first GET went on
}

func (g *gatedBlobs) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/sha256:") {
			g.mu.Lock()
			g.gets[r.URL.Path]++
			n, hold := g.gets[r.URL.Path], g.hold
			ch, ok := g.second[r.URL.Path]
			if !ok {
				ch = make(chan struct{})
				g.second[r.URL.Path] = ch
			}
			if n == 2 {
				g.together[r.URL.Path] = !g.released[r.URL.Path]
				close(ch)
			}
			g.mu.Unlock()
			if hold && n == 1 {
				select {
				case <-ch:
				case <-time.After(5 * time.Second):
				}
				g.mu.Lock()
				g.released[r.URL.Path] = true
				g.mu.Unlock()
			}
		}
		h.ServeHTTP(w, r)
	})
}

// TestRedisNamespacePerCache: two independent caches (different roots)
// sharing one Redis database do not wait on each other's leases — both
// download a blob at once — while two replicas of one cache (same root)
// still download it once. The namespaces come from the storage
// (redis.namespace unset) through the same wiring as serve.
func TestRedisNamespacePerCache(t *testing.T) {
	needRealRedis(t)
	g := &gatedBlobs{gets: map[string]int{}, together: map[string]bool{}, second: map[string]chan struct{}{}, released: map[string]bool{}}
	upSrv := httptest.NewServer(g.wrap(registry.New(registry.Logger(log.New(io.Discard, "", 0)))))
	t.Cleanup(upSrv.Close)
	img := pushImage(t, upSrv.URL, "team/app:v1", 256<<10, 2, remote.WithTransport(upSrv.Client().Transport))
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	var blobs []string
	size := map[string]int64{}
	for _, l := range layers {
		d, _ := l.Digest()
		n, _ := l.Size()
		blobs, size[d.String()] = append(blobs, d.String()), n
	}

	start := func(root string) *httptest.Server {
		cfg := config.Default()
		cfg.Storage.Root = root
		cfg.Redis.Addr = "127.0.0.1:6379"
		cfg.Upstreams = map[string]config.Upstream{"docker.io": {Endpoints: []string{upSrv.URL}}}
		if err := cfg.Validate(); err != nil {
			t.Fatal(err)
		}
		p, store, err := newProxy(cfg, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
		if err != nil {
			t.Fatal(err)
		}
		srv := httptest.NewServer(p)
		t.Cleanup(func() {
			srv.Close()
			_ = p.Close()
			_ = store.Close()
		})
		return srv
	}
	pull := func(srvs []*httptest.Server, d string) {
		var wg sync.WaitGroup
		for _, s := range srvs {
			wg.Go(func() {
				ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
				defer cancel()
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.URL+"/v2/team/app/blobs/"+d, nil)
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Errorf("%s: %v", d, err)
					return
				}
				defer resp.Body.Close()
				n, err := io.Copy(io.Discard, resp.Body)
				if err != nil || resp.StatusCode != http.StatusOK || n != size[d] {
					t.Errorf("%s: %s, %d bytes, %v", d, resp.Status, n, err)
				}
			})
		}
		wg.Wait()
	}

	// Two caches: each downloads, neither waits for the other's lease.
	g.hold = true
	two := []*httptest.Server{start(t.TempDir()), start(t.TempDir())}
	began := time.Now()
	pull(two, blobs[0])
	t.Logf("two caches: both pulls done after %s", time.Since(began))
	path := "/v2/team/app/blobs/" + blobs[0]
	g.mu.Lock()
	gets, together := g.gets[path], g.together[path]
	g.hold = false
	g.mu.Unlock()
	if gets != 2 || !together {
		t.Errorf("two caches: %d upstream GETs, in flight together %v; want 2 at once (no waiting on the other cache's lease)", gets, together)
	}

	// Two replicas of one cache: one download.
	root := t.TempDir()
	one := []*httptest.Server{start(root), start(root)}
	began = time.Now()
	pull(one, blobs[1])
	t.Logf("one cache: both pulls done after %s", time.Since(began))
	g.mu.Lock()
	gets = g.gets["/v2/team/app/blobs/"+blobs[1]]
	g.mu.Unlock()
	if gets != 1 {
		t.Errorf("one cache, two replicas: %d upstream GETs, want 1", gets)
	}
}
