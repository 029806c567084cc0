package proxy_test

import (
	"context"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/stowage/stowage/config"
	"github.com/stowage/stowage/proxy"
	"github.com/stowage/stowage/proxy/internal/testenv"
	"github.com/stowage/stowage/upstream"
)

// TestFillTrafficClass: a fill's upstream bytes count as prefetch traffic
// while only a prefetch waits on it and as client traffic while a client
// does (the link budget lets clients go first), including a prefetch fill
// that a client joins halfway.
func TestFillTrafficClass(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	budget, err := upstream.NewBudget(config.Link{}, upstream.WithBudgetRegisterer(reg))
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, envOptions{upstreamOpts: []upstream.Option{upstream.WithBudget(budget)}})
	bytesOf := func(class string) int64 {
		t.Helper()
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		var n float64
		for _, mf := range mfs {
			if mf.GetName() != "stowage_upstream_body_bytes_total" {
				continue
			}
			for _, m := range mf.GetMetric() {
				for _, l := range m.GetLabel() {
					if l.GetName() == "class" && l.GetValue() == class {
						n += m.GetCounter().GetValue()
					}
				}
			}
		}
		return int64(n)
	}
	prefetchCtx := upstream.WithClass(context.Background(), upstream.ClassPrefetch)
	target := proxy.Target{Registry: "docker.io", Repository: "library/cls"}

	// A prefetch alone: prefetch bytes.
	const size = 1 << 20
	a := e.seedBlob("library/cls:a", size, 1)
	if _, err := e.proxy.EnsureBlob(prefetchCtx, target, a, nil); err != nil {
		t.Fatal(err)
	}
	if p, c := bytesOf("prefetch"), bytesOf("client"); p != size || c != 0 {
		t.Fatalf("prefetch-only fill: prefetch %d, client %d bytes; want %d, 0", p, c, size)
	}

	// A client alone: client bytes.
	b := e.seedBlob("library/cls:b", size, 2)
	resp := e.get(context.Background(), http.MethodGet, "/v2/library/cls/blobs/"+b.String(), nil)
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if c := bytesOf("client"); c != size {
		t.Fatalf("client fill: client %d bytes, want %d", c, size)
	}

	// A slow prefetch fill that a client joins: the rest is client traffic.
	const big = 4 << 20
	c := e.seedBlob("library/cls:c", big, 3)
	e.up.SetFault(testenv.SlowBlobs(64<<10, 10*time.Millisecond))
	done := make(chan error, 1)
	go func() {
		_, err := e.proxy.EnsureBlob(prefetchCtx, target, c, nil)
		done <- err
	}()
	waitFor(t, "the prefetch fill to make progress", func() bool { return bytesOf("prefetch") > size+128<<10 })
	before := bytesOf("client")
	resp = e.get(context.Background(), http.MethodGet, "/v2/library/cls/blobs/"+c.String(), nil)
	got, n, err := readAllHash(resp.Body)
	resp.Body.Close()
	if err != nil || n != big || got != c {
		t.Fatalf("joined client: %d bytes %s, %v", n, got, err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	p, cl := bytesOf("prefetch")-size, bytesOf("client")-before
	if p <= 0 || cl <= 0 || p+cl != big {
		t.Fatalf("joined fill: prefetch %d + client %d bytes, want both > 0 summing to %d", p, cl, big)
	}
}
