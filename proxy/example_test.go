package proxy_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"

	"github.com/stowage/stowage/config"
	"github.com/stowage/stowage/proxy"
	"github.com/stowage/stowage/storage"
	"github.com/stowage/stowage/upstream"
)

// A Proxy is an http.Handler: build it over a Store and an upstream
// factory, and serve it.
func Example() {
	cfg := config.Default()
	store, err := storage.NewInMemory()
	if err != nil {
		panic(err)
	}
	defer store.Close()
	p, err := proxy.New(cfg, store, func(host string, u config.Upstream) (upstream.Registry, error) {
		return upstream.New(host, u)
	})
	if err != nil {
		panic(err)
	}
	defer p.Close()

	srv := httptest.NewServer(p)
	defer srv.Close()
	resp, err := http.Post(srv.URL+"/v2/library/alpine/blobs/uploads/", "", nil)
	if err != nil {
		panic(err)
	}
	resp.Body.Close()
	fmt.Println(resp.StatusCode, resp.Header.Get("Content-Type"))
	// Output: 405 application/json
}
