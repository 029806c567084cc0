package prefetch_test

import (
	"fmt"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/stowage/stowage/config"
	"github.com/stowage/stowage/config/imagelist"
	"github.com/stowage/stowage/proxy"
	"github.com/stowage/stowage/proxy/internal/testenv"
	"github.com/stowage/stowage/proxy/prefetch"
	"github.com/stowage/stowage/storage"
	"github.com/stowage/stowage/upstream"
)

func TestMain(m *testing.M) { testenv.VerifyNoLeaks(m) }

// env is a proxy (with its store) in front of a real upstream registry
// that serves as docker.io.
type env struct {
	t     testing.TB
	up    *testenv.Registry
	cfg   *config.Config
	root  string
	store *storage.Store
	proxy *proxy.Proxy
	reg   *prometheus.Registry
}

// testConfig makes docker.io point at url with short timeouts.
func testConfig(root, url string) *config.Config {
	cfg := config.Default()
	cfg.Listen = "127.0.0.1:0"
	cfg.Storage.Root = root
	cfg.Upstreams = map[string]config.Upstream{"docker.io": {
		Endpoints: []string{url},
		Timeouts:  config.Timeouts{Dial: time.Second, TLSHandshake: time.Second, ResponseHeader: 5 * time.Second, Stall: 5 * time.Second},
		Retry:     config.Retry{Attempts: 3, InitialBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond},
		Internal:  true,
	}}
	return cfg
}

func newEnv(t testing.TB, up *testenv.Registry, root string) *env {
	t.Helper()
	if up == nil {
		up = testenv.Start(t, testenv.Options{})
	}
	if root == "" {
		root = t.TempDir()
	}
	e := &env{t: t, up: up, root: root, cfg: testConfig(root, up.URL), reg: prometheus.NewRegistry()}
	if err := e.cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	store, err := storage.NewFilesystem(root)
	if err != nil {
		t.Fatal(err)
	}
	e.store = store
	factory := func(host string, u config.Upstream) (upstream.Registry, error) { return upstream.New(host, u) }
	p, err := proxy.New(e.cfg, store, factory, proxy.WithRegistry(e.reg))
	if err != nil {
		t.Fatal(err)
	}
	e.proxy = p
	t.Cleanup(func() {
		_ = p.Close()
		_ = store.Close()
	})
	return e
}

func (e *env) engine(opts ...prefetch.Option) *prefetch.Engine {
	e.t.Helper()
	opts = append([]prefetch.Option{prefetch.WithRegisterer(prometheus.NewRegistry()),
		prefetch.WithRetries(2, 10*time.Millisecond)}, opts...)
	eng, err := prefetch.New(e.proxy, e.store, opts...)
	if err != nil {
		e.t.Fatal(err)
	}
	return eng
}

// list parses a text list.
func list(t testing.TB, name string, lines ...string) prefetch.NamedList {
	t.Helper()
	// Problems are kept in the list (the engine reports them).
	l, _ := imagelist.ParseText(name, strings.NewReader(strings.Join(lines, "\n")))
	return prefetch.NamedList{Name: name, List: l}
}

// sharedImages pushes n images as docker.io/team/app<i>:v1 built from
// three shared base layers (two per image) plus one unique layer each. It
// returns the references and the number of unique blobs.
func sharedImages(t testing.TB, up *testenv.Registry, n int) ([]string, int) {
	t.Helper()
	return sharedImagesSized(t, up, n, 32<<10, 16<<10)
}

// sharedImagesSized is sharedImages with the base and unique layer sizes.
func sharedImagesSized(t testing.TB, up *testenv.Registry, n int, baseSize, ownSize int64) ([]string, int) {
	t.Helper()
	var bases []v1.Layer
	for range 3 {
		l, err := random.Layer(baseSize, types.DockerLayer)
		if err != nil {
			t.Fatal(err)
		}
		bases = append(bases, l)
	}
	var refs []string
	for i := range n {
		own, err := random.Layer(ownSize, types.DockerLayer)
		if err != nil {
			t.Fatal(err)
		}
		img, err := mutate.AppendLayers(empty.Image, bases[i%3], bases[(i+1)%3], own)
		if err != nil {
			t.Fatal(err)
		}
		up.Push(t, fmt.Sprintf("team/app%d:v1", i), img)
		refs = append(refs, fmt.Sprintf("docker.io/team/app%d:v1", i))
	}
	return refs, 3 + 2*n // bases + (unique layer + config) per image
}

// newProxyServer serves e's proxy over HTTP and returns its host:port.
func newProxyServer(t testing.TB, e *env) string {
	t.Helper()
	srv := httptest.NewServer(e.proxy)
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}
