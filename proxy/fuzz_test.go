package proxy_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/stowage/stowage/config"
	"github.com/stowage/stowage/proxy"
	"github.com/stowage/stowage/storage"
	"github.com/stowage/stowage/upstream"
)

// notFoundRegistry is a fault-injection upstream for the fuzzer: it answers
// "not found" to everything and records which hosts were asked for.
type notFoundRegistry struct{}

func (notFoundRegistry) GetManifest(context.Context, string, string, []string) (*upstream.Manifest, error) {
	return nil, upstream.ErrNotFound
}
func (notFoundRegistry) HeadManifest(context.Context, string, string, []string) (*upstream.Manifest, error) {
	return nil, upstream.ErrNotFound
}
func (notFoundRegistry) GetBlob(context.Context, string, digest.Digest, int64) (*upstream.Blob, error) {
	return nil, upstream.ErrNotFound
}
func (notFoundRegistry) HeadBlob(context.Context, string, digest.Digest) (int64, error) {
	return 0, upstream.ErrNotFound
}
func (notFoundRegistry) Tags(context.Context, string, int, string) (*upstream.TagPage, error) {
	return nil, upstream.ErrNotFound
}
func (notFoundRegistry) Referrers(context.Context, string, digest.Digest, string) (*upstream.Manifest, error) {
	return nil, upstream.ErrNotFound
}

// FuzzRequestPath throws arbitrary paths, queries and methods at the
// router: no panic, no 5xx, every error is an OCI error body, and only
// configured or preset registries are ever resolved.
func FuzzRequestPath(f *testing.F) {
	for _, seed := range []string{
		"/v2/", "/v2/_catalog", "/v2/library/alpine/manifests/latest", "/v2/foo/manifests/manifests/tags",
		"/v2/ghcr.io/org/app/blobs/sha256:" + strings.Repeat("a", 64), "/v2/../x/manifests/v1",
		"/v2/foo/%2e%2e/manifests/v1", "/v2/x/manifests/v1?ns=evil.example", "/v2/a/tags/list?n=3&last=b",
		"/v2/a/referrers/sha256:" + strings.Repeat("b", 64) + "?artifactType=x", "/v2/a/blobs/uploads/",
	} {
		f.Add("GET", seed)
		f.Add("HEAD", seed)
	}
	f.Add("PUT", "/v2/a/manifests/v1")
	cfg := config.Default()
	cfg.Listen = "127.0.0.1:0"
	store, err := storage.NewInMemory()
	if err != nil {
		f.Fatal(err)
	}
	var mu sync.Mutex
	asked := map[string]bool{}
	p, err := proxy.New(cfg, store, func(host string, _ config.Upstream) (upstream.Registry, error) {
		mu.Lock()
		asked[host] = true
		mu.Unlock()
		return notFoundRegistry{}, nil
	})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { _ = p.Close(); _ = store.Close() })
	f.Fuzz(func(t *testing.T, method, target string) {
		if !strings.HasPrefix(target, "/") || strings.ContainsAny(target, " \r\n\t#") || len(target) > 2048 {
			return
		}
		switch method {
		case "GET", "HEAD", "PUT", "POST", "PATCH", "DELETE":
		default:
			return
		}
		req, err := http.NewRequest(method, "http://stowage.test"+target, nil)
		if err != nil {
			return
		}
		rec := httptest.NewRecorder()
		p.ServeHTTP(rec, req)
		if rec.Code >= 500 {
			t.Fatalf("%s %s: status %d: %s", method, target, rec.Code, rec.Body)
		}
		if rec.Code >= 400 && method != "HEAD" {
			var body struct {
				Errors []struct{ Code string } `json:"errors"`
			}
			if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil || len(body.Errors) == 0 {
				t.Fatalf("%s %s: status %d without an OCI error body: %q", method, target, rec.Code, rec.Body)
			}
		}
		mu.Lock()
		defer mu.Unlock()
		for host := range asked {
			if _, ok := cfg.Upstream(host); !ok {
				t.Fatalf("%s %s: resolved unknown registry %q", method, target, host)
			}
		}
	})
}
