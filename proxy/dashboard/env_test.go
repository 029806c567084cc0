package dashboard_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/stowage/stowage/config"
	"github.com/stowage/stowage/proxy"
	"github.com/stowage/stowage/proxy/dashboard"
	"github.com/stowage/stowage/proxy/internal/testenv"
	"github.com/stowage/stowage/proxy/prefetch"
	"github.com/stowage/stowage/storage"
	"github.com/stowage/stowage/upstream"
)

const testToken = "s3cret-token"

// env is a real Stowage (proxy, filesystem store, prefetch jobs, admin
// API and dashboard, mounted as cmd/proxy mounts them) in front of a real
// upstream registry.
type env struct {
	t     *testing.T
	up    *testenv.Registry
	store *storage.Store
	proxy *proxy.Proxy
	dash  *dashboard.Dashboard
	srv   *httptest.Server
	host  string
}

type envOptions struct {
	public    bool // ui.public_read_only
	usage     dashboard.UsageSource
	configure func(*config.Config)
}

func newEnv(t *testing.T, o envOptions) *env {
	t.Helper()
	e := &env{t: t, up: testenv.Start(t, testenv.Options{})}
	cfg := config.Default()
	cfg.Listen = "127.0.0.1:0"
	cfg.Storage.Root = t.TempDir()
	fast := config.Upstream{
		Endpoints: []string{e.up.URL},
		Timeouts:  config.Timeouts{Dial: time.Second, TLSHandshake: time.Second, ResponseHeader: 2 * time.Second, Stall: 5 * time.Second},
		Retry:     config.Retry{Attempts: 3, InitialBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond},
		Internal:  true,
	}
	cfg.Upstreams = map[string]config.Upstream{"docker.io": fast}
	cfg.Presets = false
	if o.configure != nil {
		o.configure(cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	store, err := storage.NewFilesystem(cfg.Storage.Root)
	if err != nil {
		t.Fatal(err)
	}
	e.store = store
	reg := prometheus.NewRegistry()
	p, err := proxy.New(cfg, store, func(host string, u config.Upstream) (upstream.Registry, error) {
		return upstream.New(host, u)
	}, proxy.WithRegistry(reg))
	if err != nil {
		t.Fatal(err)
	}
	e.proxy = p
	eng, err := prefetch.New(p, store, prefetch.WithRegisterer(reg))
	if err != nil {
		t.Fatal(err)
	}
	jobs, err := prefetch.NewJobs(eng, 2, 10)
	if err != nil {
		t.Fatal(err)
	}
	admin, err := prefetch.NewAdminHandler(jobs, prefetch.AdminOptions{Token: testToken, Fills: p.FillsHandler()})
	if err != nil {
		t.Fatal(err)
	}
	e.dash, err = dashboard.New(dashboard.Options{
		Proxy: p, Store: store, Gatherer: reg, Jobs: jobs, Admin: admin, Token: testToken,
		PublicReadOnly: o.public, Usage: o.usage, SampleInterval: 200 * time.Millisecond,
		Replica: "replica-a", Version: "test",
	})
	if err != nil {
		t.Fatal(err)
	}
	e.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/api/") || strings.HasPrefix(r.URL.Path, "/ui") {
			e.dash.ServeHTTP(w, r)
			return
		}
		p.ServeHTTP(w, r)
	}))
	e.host = strings.TrimPrefix(e.srv.URL, "http://")
	t.Cleanup(func() {
		e.srv.Close()
		e.dash.Close()
		jobs.Close()
		_ = p.Close()
		_ = store.Close()
	})
	return e
}

// pull pulls an image through the proxy (manifest, config, every layer)
// and returns how many blobs it has and their total size.
func (e *env) pull(repoTag string) (blobs int, size int64) {
	e.t.Helper()
	ref, err := name.ParseReference(e.host+"/"+repoTag, name.Insecure)
	if err != nil {
		e.t.Fatal(err)
	}
	img, err := remote.Image(ref, remote.WithContext(e.t.Context()))
	if err != nil {
		e.t.Fatal(err)
	}
	cfg, err := img.RawConfigFile()
	if err != nil {
		e.t.Fatal(err)
	}
	blobs, size = 1, int64(len(cfg))
	layers, err := img.Layers()
	if err != nil {
		e.t.Fatal(err)
	}
	for _, l := range layers {
		rc, err := l.Compressed()
		if err != nil {
			e.t.Fatal(err)
		}
		n, err := io.Copy(io.Discard, rc)
		_ = rc.Close()
		if err != nil {
			e.t.Fatal(err)
		}
		blobs++
		size += n
	}
	return blobs, size
}

// call makes one API request; token "" sends none.
func (e *env) call(method, path, token, ctype, body string) (int, []byte) {
	e.t.Helper()
	req, err := http.NewRequestWithContext(e.t.Context(), method, e.srv.URL+path, strings.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return resp.StatusCode, b
}

// getJSON GETs path with the token, wants 200 and decodes into v.
func (e *env) getJSON(path string, v any) {
	e.t.Helper()
	code, b := e.call(http.MethodGet, path, testToken, "", "")
	if code != http.StatusOK {
		e.t.Fatalf("GET %s: %d %s", path, code, b)
	}
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		e.t.Fatalf("GET %s: %v\n%s", path, err, b)
	}
}

// waitFor polls cond, bounded in time.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}
