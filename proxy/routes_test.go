package proxy_test

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"
)

// TestRouting maps URIs to what the upstream is asked (route + variables)
// or to the OCI error the client gets, including the ambiguous names and
// path traversal.
func TestRouting(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	var mu sync.Mutex
	var seen []string
	e.up.SetFault(func(w http.ResponseWriter, r *http.Request, next http.Handler) {
		if r.URL.Path != "/v2/" { // the client's auth ping
			mu.Lock()
			seen = append(seen, r.Method+" "+r.URL.Path)
			mu.Unlock()
		}
		next.ServeHTTP(w, r)
	})
	const d = "sha256:0000000000000000000000000000000000000000000000000000000000000000"
	long := strings.Repeat("a", 250) + "/" + strings.Repeat("b", 10)
	for _, tc := range []struct {
		method, uri string
		status      int
		code        string // OCI error code, "" for a success
		upstream    string // request the upstream must see, "" for none
	}{
		{"GET", "/v2/", 200, "", ""},
		{"HEAD", "/v2/", 200, "", ""},
		{"GET", "/v2/foo/manifests/manifests/tags", 404, "MANIFEST_UNKNOWN", "GET /v2/foo/manifests/manifests/tags"},
		{"GET", "/v2/foo/manifests/tags/list", 404, "NAME_UNKNOWN", "GET /v2/foo/manifests/tags/list"},
		{"GET", "/v2/blobs/blobs/" + d, 404, "BLOB_UNKNOWN", "GET /v2/library/blobs/blobs/" + d},
		{"GET", "/v2/a/b/c/manifests/v1", 404, "MANIFEST_UNKNOWN", "GET /v2/a/b/c/manifests/v1"},
		{"GET", "/v2/alpine/manifests/latest", 404, "MANIFEST_UNKNOWN", "GET /v2/library/alpine/manifests/latest"},
		{"GET", "/v2/ghcr.io/org/app/manifests/v1", 404, "MANIFEST_UNKNOWN", "GET /v2/org/app/manifests/v1"},
		{"GET", "/v2/org/app/manifests/v1?ns=ghcr.io", 404, "MANIFEST_UNKNOWN", "GET /v2/org/app/manifests/v1"},
		{"GET", "/v2/evil.example.com/x/manifests/v1", 403, "DENIED", ""},
		{"GET", "/v2/x/manifests/v1?ns=evil.example.com", 403, "DENIED", ""},
		{"GET", "/v2/../etc/passwd/manifests/v1", 400, "NAME_INVALID", ""},
		{"GET", "/v2/foo/%2e%2e/bar/manifests/v1", 400, "NAME_INVALID", ""},
		{"GET", "/v2/foo/..%2fbar/blobs/" + d, 400, "NAME_INVALID", ""},
		{"GET", "/v2/Foo/manifests/v1", 400, "NAME_INVALID", ""},
		{"GET", "/v2/" + long + "/manifests/v1", 400, "NAME_INVALID", ""},
		{"GET", "/v2/foo/manifests/-bad", 404, "MANIFEST_UNKNOWN", ""},
		{"HEAD", "/v2/foo/manifests/.INVALID_MANIFEST_NAME", 404, "", ""},
		{"GET", "/v2/foo/manifests/sha256:xyz", 400, "DIGEST_INVALID", ""},
		{"GET", "/v2/foo/blobs/sha256:abc", 400, "DIGEST_INVALID", ""},
		{"GET", "/v2/foo/blobs/latest", 400, "DIGEST_INVALID", ""},
		{"GET", "/v2/foo/referrers/v1", 400, "DIGEST_INVALID", ""},
		{"GET", "/v2/foo/tags/list?n=-1", 400, "PAGINATION_NUMBER_INVALID", ""},
		{"PUT", "/v2/foo/manifests/v1", 405, "UNSUPPORTED", ""},
		{"DELETE", "/v2/foo/manifests/" + d, 405, "UNSUPPORTED", ""},
		{"DELETE", "/v2/foo/blobs/" + d, 405, "UNSUPPORTED", ""},
		{"POST", "/v2/foo/blobs/uploads/", 405, "UNSUPPORTED", ""},
		{"PATCH", "/v2/foo/blobs/uploads/abc", 405, "UNSUPPORTED", ""},
		{"PUT", "/v2/foo/blobs/uploads/abc?digest=" + d, 405, "UNSUPPORTED", ""},
		{"GET", "/v2/foo", 404, "NAME_UNKNOWN", ""},
		{"GET", "/nope", 404, "UNSUPPORTED", ""},
	} {
		t.Run(tc.method+" "+tc.uri, func(t *testing.T) {
			mu.Lock()
			seen = nil
			mu.Unlock()
			resp := e.get(context.Background(), tc.method, tc.uri, nil)
			defer resp.Body.Close()
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.status)
			}
			if tc.code != "" {
				if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
					t.Errorf("error Content-Type %q", ct)
				}
				if got := ociError(t, resp); got != tc.code {
					t.Errorf("code %s, want %s", got, tc.code)
				}
			}
			mu.Lock()
			defer mu.Unlock()
			if tc.upstream == "" && len(seen) > 0 {
				t.Errorf("upstream was contacted: %v", seen)
			}
			if tc.upstream != "" && (len(seen) == 0 || seen[0] != tc.upstream) {
				t.Errorf("upstream saw %v, want %q", seen, tc.upstream)
			}
		})
	}
}

// TestHeadErrorHasNoBody checks the HEAD variant of an error.
func TestHeadErrorHasNoBody(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	resp := e.get(context.Background(), http.MethodHead, "/v2/foo/manifests/missing", nil)
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("status %d", resp.StatusCode)
	}
	buf := make([]byte, 1)
	if n, _ := resp.Body.Read(buf); n != 0 {
		t.Fatal("HEAD error has a body")
	}
}
