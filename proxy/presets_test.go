package proxy_test

import (
	"net/http"
	"testing"

	"github.com/stowage/stowage/config"
	"github.com/stowage/stowage/proxy/internal/testenv"
)

// TestPresetsOff: with presets: false a preset registry is refused with
// 403 DENIED before anything is contacted, and an upstream with
// disabled: true likewise, while the configured upstreams keep working.
func TestPresetsOff(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{configure: func(c *config.Config) {
		c.Presets = false
		// quay.io would reach the test registry if it were enabled.
		c.Upstreams["quay.io"] = config.Upstream{Endpoints: []string{c.Upstreams["docker.io"].Endpoints[0]}, Internal: true, Disabled: true}
	}})
	kinds := []testenv.Kind{testenv.ManifestGet, testenv.ManifestHead, testenv.BlobGet, testenv.BlobHead, testenv.Tags, testenv.Referrers, testenv.Other}
	for _, uri := range []string{
		"/v2/quay.io/x/manifests/y",    // disabled: true
		"/v2/x/manifests/y?ns=quay.io", // the same through ns
		"/v2/nvcr.io/x/manifests/y",    // a preset, presets: false
		"/v2/x/manifests/y?ns=registry.gitlab.com",
		"/v2/public.ecr.aws/x/tags/list",
	} {
		resp := e.get(t.Context(), http.MethodGet, uri, nil)
		code := ociError(t, resp)
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden || code != "DENIED" {
			t.Errorf("%s: %d %s, want 403 DENIED", uri, resp.StatusCode, code)
		}
	}
	for _, k := range kinds {
		if n := e.up.Count(k); n != 0 {
			t.Errorf("upstream saw %d %s requests for refused registries", n, k)
		}
	}
	// The configured upstreams still answer (the repository does not exist).
	for _, uri := range []string{"/v2/x/manifests/y", "/v2/ghcr.io/x/manifests/y"} {
		resp := e.get(t.Context(), http.MethodGet, uri, nil)
		code := ociError(t, resp)
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound || code != "MANIFEST_UNKNOWN" {
			t.Errorf("%s: %d %s, want 404 MANIFEST_UNKNOWN from the upstream", uri, resp.StatusCode, code)
		}
	}
}
