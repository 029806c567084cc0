package proxy_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	driver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/distribution/distribution/v3/registry/storage/driver/filesystem"
	ggcrv1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/opencontainers/go-digest"

	"github.com/stowage/stowage/config"
	"github.com/stowage/stowage/proxy"
	"github.com/stowage/stowage/storage"
	"github.com/stowage/stowage/upstream"
)

// faultDriver wraps the filesystem driver of a cache root: it counts the
// bytes read from blob data files and can fail writes, faults a real disk
// produces only when it is full or broken.
type faultDriver struct {
	driver.StorageDriver
	blobBytesRead atomic.Int64
	mu            sync.Mutex
	failPut       func(path string) error
}

func newFaultDriver(root string) *faultDriver {
	return &faultDriver{StorageDriver: filesystem.New(filesystem.DriverParameters{RootDirectory: root, MaxThreads: 100})}
}

func (d *faultDriver) setFailPut(f func(path string) error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.failPut = f
}

func isBlobData(path string) bool {
	return strings.Contains(path, "/blobs/") && strings.HasSuffix(path, "/data")
}

func (d *faultDriver) GetContent(ctx context.Context, path string) ([]byte, error) {
	b, err := d.StorageDriver.GetContent(ctx, path)
	if isBlobData(path) {
		d.blobBytesRead.Add(int64(len(b)))
	}
	return b, err
}

func (d *faultDriver) Reader(ctx context.Context, path string, off int64) (io.ReadCloser, error) {
	rc, err := d.StorageDriver.Reader(ctx, path, off)
	if err != nil || !isBlobData(path) {
		return rc, err
	}
	return &countingReadCloser{ReadCloser: rc, n: &d.blobBytesRead}, nil
}

func (d *faultDriver) PutContent(ctx context.Context, path string, content []byte) error {
	d.mu.Lock()
	f := d.failPut
	d.mu.Unlock()
	if f != nil {
		if err := f(path); err != nil {
			return err
		}
	}
	return d.StorageDriver.PutContent(ctx, path, content)
}

type countingReadCloser struct {
	io.ReadCloser
	n *atomic.Int64
}

func (r *countingReadCloser) Read(p []byte) (int, error) {
	n, err := r.ReadCloser.Read(p)
	r.n.Add(int64(n))
	return n, err
}

// reopen starts a second proxy (a restart, or another replica) on e's
// configuration, clock and upstream, over store.
func (e *env) reopen(t *testing.T, store *storage.Store, configure func(*config.Config)) *env {
	t.Helper()
	cfg := *e.cfg
	cfg.Upstreams = e.cfg.Upstreams
	if configure != nil {
		configure(&cfg)
	}
	factory := func(host string, u config.Upstream) (upstream.Registry, error) { return upstream.New(host, u) }
	p, err := proxy.New(&cfg, store, factory, proxy.WithClock(e.clock.Now))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(p)
	t.Cleanup(func() {
		srv.Close()
		_ = p.Close()
		_ = store.Close()
	})
	n := *e
	n.cfg, n.store, n.proxy, n.srv = &cfg, store, p, srv
	n.host = strings.TrimPrefix(srv.URL, "http://")
	return &n
}

// reopenFaulty is reopen over a faultDriver on e's root.
func (e *env) reopenFaulty(t *testing.T) (*env, *faultDriver) {
	t.Helper()
	d := newFaultDriver(e.root)
	store, err := storage.New(d)
	if err != nil {
		t.Fatal(err)
	}
	return e.reopen(t, store, nil), d
}

// manifestResp is one manifest answer.
type manifestResp struct {
	status int
	ctype  string
	digest string
	code   string // OCI error code, for errors
	body   []byte
}

func (e *env) manifest(t *testing.T, method, repoRef string, accept ...string) manifestResp {
	t.Helper()
	return fetchManifestFrom(t, e.srv.URL, method, repoRef, accept...)
}

// fetchManifestFrom requests /v2/<repo>/manifests/<ref> from base ("repo:tag"
// or "repo@digest").
func fetchManifestFrom(t *testing.T, base, method, repoRef string, accept ...string) manifestResp {
	t.Helper()
	repo, ref, ok := strings.Cut(repoRef, "@")
	if !ok {
		repo, ref, _ = strings.Cut(repoRef, ":")
	}
	req, err := http.NewRequestWithContext(t.Context(), method, base+"/v2/"+repo+"/manifests/"+ref, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(accept) > 0 {
		req.Header.Set("Accept", strings.Join(accept, ", "))
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	r := manifestResp{status: resp.StatusCode, ctype: resp.Header.Get("Content-Type"),
		digest: resp.Header.Get("Docker-Content-Digest"), body: body}
	if resp.StatusCode >= 400 && method != http.MethodHead {
		var env struct {
			Errors []struct {
				Code string `json:"code"`
			} `json:"errors"`
		}
		if jsonDecode(strings.NewReader(string(body)), &env) == nil && len(env.Errors) > 0 {
			r.code = env.Errors[0].Code
		}
	}
	return r
}

// manifestDigest is an image's or index's manifest digest.
func manifestDigest(t *testing.T, x interface{ Digest() (ggcrv1.Hash, error) }) digest.Digest {
	t.Helper()
	h, err := x.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return digest.Digest(h.String())
}
