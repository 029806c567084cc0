package dashboard_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/stowage/stowage/config"
	"github.com/stowage/stowage/proxy"
	"github.com/stowage/stowage/proxy/dashboard"
	"github.com/stowage/stowage/storage"
	"github.com/stowage/stowage/upstream"
)

// Mount the dashboard beside the registry API: /ui/ and /api/ go to the
// dashboard, the rest to the proxy.
func ExampleNew() {
	store, _ := storage.NewInMemory()
	defer store.Close()
	reg := prometheus.NewRegistry()
	p, _ := proxy.New(config.Default(), store, func(host string, u config.Upstream) (upstream.Registry, error) {
		return upstream.New(host, u)
	}, proxy.WithRegistry(reg))
	defer p.Close()
	d, err := dashboard.New(dashboard.Options{Proxy: p, Store: store, Gatherer: reg, PublicReadOnly: true})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer d.Close()
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/api/") || strings.HasPrefix(r.URL.Path, "/ui") {
			d.ServeHTTP(w, r)
			return
		}
		p.ServeHTTP(w, r)
	})
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/api/v1/stats?range=day", nil))
	fmt.Println(rec.Code, strings.TrimSpace(rec.Body.String()))
	// Output: 200 {"range":"day","step_seconds":300,"points":[]}
}
