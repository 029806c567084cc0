package upstream

import (
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/stowage/stowage/upstream/internal/testregistry"
)

// wantProxyAnswer checks that err is the forward proxy's answer with the
// given status and method: ErrProxy (so Temporary, a cached tag is served
// stale), not the registry's ErrDenied, not retryable.
func wantProxyAnswer(t *testing.T, err error, status int, method string) {
	t.Helper()
	if !errors.Is(err, ErrProxy) || !Temporary(err) || Retryable(err) || errors.Is(err, ErrDenied) {
		t.Fatalf("err = %v; want ErrProxy, Temporary, not Retryable, not ErrDenied", err)
	}
	var se *StatusError
	if !errors.As(err, &se) || se.Status != status || se.Method != method || se.URL == "" {
		t.Fatalf("StatusError = %+v, want status %d for %s", se, status, method)
	}
}

// TestProxyAuth407: a forward proxy refusing Stowage's proxy credentials
// answers 407: for a plain-HTTP upstream in the registry's place, for an
// HTTPS upstream to the CONNECT. Neither is the registry's word, and
// neither is retried.
func TestProxyAuth407(t *testing.T) {
	t.Parallel()
	reg := testregistry.Start(t)
	reg.SeedImage(t, "team/app", "v1", 1, 256)
	tlsReg := testregistry.Start(t, testregistry.WithTLS())
	px := startFwdProxy(t, map[string]string{"registry.test:80": reg.Addr, "registry.test:443": tlsReg.Addr}, "pxuser", "px-pw")
	wrong := strings.Replace(px.URL(), "px-pw", "expired", 1)

	for _, tc := range []struct {
		name, endpoint, method string
	}{
		{"plain HTTP", "http://registry.test", http.MethodGet},
		{"CONNECT", "https://registry.test", http.MethodConnect},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := px.refused.Load()
			cfg := testConfig(tc.endpoint)
			cfg.Proxy = wrong
			_, err := newClient(t, cfg).GetManifest(t.Context(), "team/app", "v1", nil)
			wantProxyAnswer(t, err, http.StatusProxyAuthRequired, tc.method)
			if strings.Contains(err.Error(), "expired") {
				t.Fatalf("proxy password in the error: %v", err)
			}
			if n := px.refused.Load() - before; n != 1 {
				t.Fatalf("proxy refused %d requests, want 1 (a 407 is not retried)", n)
			}
		})
	}
}

// TestProxyPolicyPage403: a corporate proxy's own 403 (an HTML policy page,
// as TLS-inspecting proxies send inside the tunnel) is ErrProxy; the
// registry's own 403 through the same proxy stays ErrDenied.
func TestProxyPolicyPage403(t *testing.T) {
	t.Parallel()
	reg := testregistry.Start(t, testregistry.WithHandler(func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if strings.Contains(r.URL.Path, "/secret/") {
				w.Header().Set("Docker-Distribution-Api-Version", "registry/2.0")
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusForbidden)
				_, _ = io.WriteString(w, `{"errors":[{"code":"DENIED","message":"requested access to the resource is denied"}]}`)
				return
			}
			h.ServeHTTP(w, r)
		})
	}))
	reg.SeedImage(t, "team/app", "v1", 1, 256)
	px := startFwdProxy(t, map[string]string{"registry.test:80": reg.Addr}, "", "")
	px.block = func(r *http.Request) bool { return strings.Contains(r.URL.Path, "/blocked/") }
	cfg := testConfig("http://registry.test")
	cfg.Proxy = px.URL()
	c := newClient(t, cfg)

	_, err := c.GetManifest(t.Context(), "blocked/app", "v1", nil)
	wantProxyAnswer(t, err, http.StatusForbidden, http.MethodGet)
	if px.blocked.Load() != 1 {
		t.Fatalf("blocked %d requests, want 1 (not retried)", px.blocked.Load())
	}

	_, err = c.GetManifest(t.Context(), "secret/app", "v1", nil)
	if !errors.Is(err, ErrDenied) || errors.Is(err, ErrProxy) || Temporary(err) {
		t.Fatalf("registry's own 403: %v, want ErrDenied only", err)
	}
	var se *StatusError
	if !errors.As(err, &se) || se.Status != http.StatusForbidden || se.Code != "DENIED" {
		t.Fatalf("registry's 403: %+v", se)
	}
	if _, err := c.GetManifest(t.Context(), "team/app", "v1", nil); err != nil {
		t.Fatalf("allowed request: %v", err)
	}
}

// TestTLSInspectingProxy403: a TLS-inspecting proxy (CONNECT accepted, TLS
// terminated with the interception certificate the client trusts) answers
// a blocked request inside the tunnel with its 403 HTML page: ErrProxy, not
// the registry's denial; other requests pass.
func TestTLSInspectingProxy403(t *testing.T) {
	t.Parallel()
	reg := testregistry.Start(t, testregistry.WithTLS())
	reg.SeedImage(t, "team/app", "v1", 1, 256)
	// httptest's certificate names *.example.com; the proxy intercepts
	// with it, and the client trusts its CA as a corporate CA.
	px := startFwdProxy(t, map[string]string{"registry.example.com:443": reg.Addr}, "", "")
	px.inspect = reg.Server.TLS.Clone()
	px.block = func(r *http.Request) bool { return strings.Contains(r.URL.Path, "/blocked/") }
	cfg := testConfig("https://registry.example.com")
	cfg.Proxy = px.URL()
	cfg.TLS.CAFile = reg.CAFile(t)
	c := newClient(t, cfg)

	if _, err := c.GetManifest(t.Context(), "team/app", "v1", nil); err != nil {
		t.Fatalf("through the inspecting proxy: %v", err)
	}
	_, err := c.GetManifest(t.Context(), "blocked/app", "v1", nil)
	wantProxyAnswer(t, err, http.StatusForbidden, http.MethodGet)
	if px.blocked.Load() != 1 {
		t.Fatalf("blocked %d requests, want 1 (not retried)", px.blocked.Load())
	}
}

// TestRegistryAnswer is the 403 rule in a table.
func TestRegistryAnswer(t *testing.T) {
	t.Parallel()
	oci := []byte(`{"errors":[{"code":"DENIED","message":"no"}]}`)
	for _, tc := range []struct {
		name   string
		header map[string]string
		body   []byte
		want   bool
	}{
		{"registry header", map[string]string{"Docker-Distribution-Api-Version": "registry/2.0"}, nil, true},
		{"OCI error body", map[string]string{"Content-Type": "application/json"}, oci, true},
		{"OCI body behind a CDN", map[string]string{"Via": "1.1 cdn"}, oci, true},
		{"HTML policy page", map[string]string{"Content-Type": "text/html", "Via": "1.1 proxy"}, []byte("<html>denied</html>"), false},
		{"bare", nil, nil, false},
		{"squid", map[string]string{"X-Squid-Error": "ERR_ACCESS_DENIED 0", "Docker-Distribution-Api-Version": "registry/2.0"}, oci, false},
		{"proxy challenge", map[string]string{"Proxy-Authenticate": "Basic"}, oci, false},
		{"JSON without code", nil, []byte(`{"errors":[{"message":"x"}]}`), false},
	} {
		h := http.Header{}
		for k, v := range tc.header {
			h.Set(k, v)
		}
		if got := registryAnswer(h, tc.body); got != tc.want {
			t.Errorf("%s: registryAnswer = %v, want %v", tc.name, got, tc.want)
		}
	}
}
