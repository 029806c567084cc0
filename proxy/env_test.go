package proxy_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/opencontainers/go-digest"

	"github.com/stowage/stowage/config"
	"github.com/stowage/stowage/proxy"
	"github.com/stowage/stowage/proxy/internal/testenv"
	"github.com/stowage/stowage/storage"
	"github.com/stowage/stowage/upstream"
)

// env is one proxy in front of one real upstream registry.
type env struct {
	t        testing.TB
	up       *testenv.Registry
	cfg      *config.Config
	store    *storage.Store
	proxy    *proxy.Proxy
	srv      *httptest.Server
	host     string // proxy host:port
	root     string
	clock    *fakeClock
	upstream string // URL the proxy uses for docker.io
}

type envOptions struct {
	// upstreamURL overrides the upstream endpoint (e.g. a hanging server).
	upstreamURL string
	// root reuses a cache directory.
	root string
	// configure adjusts the config before the proxy starts.
	configure func(*config.Config)
	// shared reuses another env's upstream registry (a second replica).
	shared *testenv.Registry
	// upstreamOpts are passed to every upstream client (a link budget).
	upstreamOpts []upstream.Option
	// coord is a cluster fill coordinator.
	coord proxy.Coordinator
	// store replaces the filesystem store under root (a wrapped driver).
	store *storage.Store
	// proxyOpts are added to the proxy's options (a metrics registry).
	proxyOpts []proxy.Option
}

// fakeClock is an injectable clock for TTL tests.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func newEnv(t testing.TB, o envOptions) *env {
	t.Helper()
	e := &env{t: t, clock: &fakeClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}}
	e.up = o.shared
	if e.up == nil {
		e.up = testenv.Start(t, testenv.Options{})
	}
	e.upstream = e.up.URL
	if o.upstreamURL != "" {
		e.upstream = o.upstreamURL
	}
	e.root = o.root
	if e.root == "" {
		e.root = t.TempDir()
	}
	cfg := config.Default()
	cfg.Listen = "127.0.0.1:0"
	cfg.Storage.Root = e.root
	fast := config.Upstream{
		Endpoints: []string{e.upstream},
		Timeouts:  config.Timeouts{Dial: time.Second, TLSHandshake: time.Second, ResponseHeader: 2 * time.Second, Stall: 2 * time.Second},
		Retry:     config.Retry{Attempts: 3, InitialBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond},
		Internal:  true,
	}
	cfg.Upstreams = map[string]config.Upstream{"docker.io": fast, "ghcr.io": fast}
	if o.configure != nil {
		o.configure(cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	e.cfg = cfg
	store, err := storage.NewFilesystem(e.root)
	if err != nil {
		t.Fatal(err)
	}
	if o.store != nil {
		store = o.store
	}
	e.store = store
	factory := func(host string, u config.Upstream) (upstream.Registry, error) {
		return upstream.New(host, u, o.upstreamOpts...)
	}
	opts := []proxy.Option{proxy.WithClock(e.clock.Now)}
	if o.coord != nil {
		opts = append(opts, proxy.WithCoordinator(o.coord))
	}
	opts = append(opts, o.proxyOpts...)
	p, err := proxy.New(cfg, store, factory, opts...)
	if err != nil {
		t.Fatal(err)
	}
	e.proxy = p
	e.srv = httptest.NewServer(p)
	e.host = strings.TrimPrefix(e.srv.URL, "http://")
	t.Cleanup(func() {
		e.srv.Close()
		_ = p.Close()
		_ = store.Close()
	})
	return e
}

// ref names an image through the proxy.
func (e *env) ref(repoRef string) name.Reference {
	e.t.Helper()
	ref, err := name.ParseReference(e.host+"/"+repoRef, name.Insecure)
	if err != nil {
		e.t.Fatal(err)
	}
	return ref
}

// get performs a request against the proxy.
func (e *env) get(ctx context.Context, method, path string, hdr http.Header) *http.Response {
	e.t.Helper()
	req, err := http.NewRequestWithContext(ctx, method, e.srv.URL+path, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	return resp
}

// seedBlob pushes an image whose one layer is size seeded random bytes to
// the upstream under repoTag, resets the upstream counters and returns the
// layer's digest.
func (e *env) seedBlob(repoTag string, size int64, seed uint64) digest.Digest {
	e.t.Helper()
	img, layer := testenv.RawBlobImage(e.t, size, seed)
	e.up.Push(e.t, repoTag, img)
	d, err := layer.Digest()
	if err != nil {
		e.t.Fatal(err)
	}
	e.up.ResetCounts()
	return digest.Digest(d.String())
}

// readAllHash reads a body fully, returning its digest, length and the read
// error (a cut-short body shows up here).
func readAllHash(r io.Reader) (digest.Digest, int64, error) {
	h := sha256.New()
	n, err := io.Copy(h, r)
	return digest.Digest("sha256:" + hex.EncodeToString(h.Sum(nil))), n, err
}

// waitFor polls cond, bounded in time.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}

// ociError decodes an OCI error body and returns its first code.
func ociError(t *testing.T, resp *http.Response) string {
	t.Helper()
	var body struct {
		Errors []struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"errors"`
	}
	if err := jsonDecode(resp.Body, &body); err != nil {
		t.Fatalf("status %d: body is not an OCI error: %v", resp.StatusCode, err)
	}
	if len(body.Errors) == 0 {
		t.Fatalf("status %d: OCI error body without errors", resp.StatusCode)
	}
	return body.Errors[0].Code
}
