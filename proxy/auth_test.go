package proxy_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"golang.org/x/crypto/bcrypt"

	"github.com/stowage/stowage/proxy"
	"github.com/stowage/stowage/proxy/internal/testenv"
)

// writeHtpasswd writes user:bcrypt(password) lines (bcrypt.MinCost: the
// format is what matters here, not the cost).
func writeHtpasswd(t *testing.T, path string, creds ...string) {
	t.Helper()
	var b strings.Builder
	b.WriteString("# test users\n")
	for i := 0; i+1 < len(creds); i += 2 {
		h, err := bcrypt.GenerateFromPassword([]byte(creds[i+1]), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		b.WriteString(creds[i] + ":" + string(h) + "\n")
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// authServer serves e's proxy behind proxy.Serving with an htpasswd file.
func authServer(t *testing.T, e *env, path string) string {
	t.Helper()
	h, err := proxy.NewHtpasswd(path, "stowage-test", nil)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(proxy.Serving(e.proxy, proxy.ServingOptions{Auth: h}))
	t.Cleanup(srv.Close)
	return srv.URL
}

func TestHtpasswdAuth(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.up.Push(t, "library/app:v1", testenv.DockerImage(t, 3, 32<<10))
	path := filepath.Join(t.TempDir(), "htpasswd")
	writeHtpasswd(t, path, "alice", "s3cret")
	base := authServer(t, e, path)
	ctx := context.Background()

	do := func(method, path, user, password string) *http.Response {
		t.Helper()
		req, _ := http.NewRequestWithContext(ctx, method, base+path, nil)
		if user != "" {
			req.SetBasicAuth(user, password)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { resp.Body.Close() })
		return resp
	}
	for _, tc := range []struct{ name, user, password string }{
		{"missing", "", ""}, {"wrong password", "alice", "nope"}, {"unknown user", "mallory", "s3cret"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, path := range []string{"/v2/", "/v2/library/app/manifests/v1"} {
				resp := do(http.MethodGet, path, tc.user, tc.password)
				if resp.StatusCode != http.StatusUnauthorized {
					t.Fatalf("GET %s: status %d, want 401", path, resp.StatusCode)
				}
				if got := resp.Header.Get("WWW-Authenticate"); got != `Basic realm="stowage-test"` {
					t.Errorf("WWW-Authenticate %q", got)
				}
				if code := ociError(t, resp); code != "UNAUTHORIZED" {
					t.Errorf("code %s, want UNAUTHORIZED", code)
				}
			}
		})
	}
	t.Run("admin API and dashboard keep their own token", func(t *testing.T) {
		for _, path := range []string{"/api/v1/prefetch", "/ui/"} {
			resp := do(http.MethodGet, path, "", "")
			if resp.StatusCode == http.StatusUnauthorized || resp.Header.Get("WWW-Authenticate") != "" {
				t.Errorf("GET %s: status %d, WWW-Authenticate %q: a Basic challenge would replace the bearer token", path, resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
			}
		}
	})
	t.Run("probes stay open", func(t *testing.T) {
		for _, path := range []string{"/healthz", "/metrics"} {
			if resp := do(http.MethodGet, path, "", ""); resp.StatusCode != http.StatusOK {
				t.Errorf("GET %s without credentials: status %d", path, resp.StatusCode)
			}
		}
	})
	ref := func(t *testing.T) name.Reference {
		r, err := name.ParseReference(strings.TrimPrefix(base, "http://")+"/library/app:v1", name.Insecure)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	t.Run("crane pulls with the right credentials", func(t *testing.T) {
		img, err := remote.Image(ref(t), remote.WithAuth(&authn.Basic{Username: "alice", Password: "s3cret"}))
		if err != nil {
			t.Fatal(err)
		}
		layers, err := img.Layers()
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range layers {
			rc, err := l.Compressed() // verified against the digest on close
			if err != nil {
				t.Fatal(err)
			}
			if _, err := io.Copy(io.Discard, rc); err != nil {
				t.Fatal(err)
			}
			if err := rc.Close(); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := remote.Image(ref(t), remote.WithAuth(&authn.Basic{Username: "alice", Password: "wrong"})); err == nil {
			t.Fatal("crane with a wrong password pulled")
		}
	})
	t.Run("a changed file is picked up", func(t *testing.T) {
		writeHtpasswd(t, path, "bob", "n3w")
		waitFor(t, "the new htpasswd entry", func() bool {
			resp := do(http.MethodGet, "/v2/", "bob", "n3w")
			io.Copy(io.Discard, resp.Body)
			return resp.StatusCode == http.StatusOK
		})
		if resp := do(http.MethodGet, "/v2/", "alice", "s3cret"); resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("removed user: status %d, want 401", resp.StatusCode)
		}
	})
}
