package proxy_test

import (
	"context"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/stowage/stowage/config"
	"github.com/stowage/stowage/proxy"
	"github.com/stowage/stowage/proxy/internal/testenv"
	"github.com/stowage/stowage/upstream"
)

// TestFillCapAnswers503: with cache.fill.max_concurrent = 1 and one fill
// held at the upstream, a blob that would start a second fill is answered
// 503 with Retry-After, while a second client of the running fill joins it
// and gets the whole blob.
func TestFillCapAnswers503(t *testing.T) {
	e := newEnv(t, envOptions{configure: func(c *config.Config) { c.Cache.Fill.MaxConcurrent = 1 }})
	a := e.seedBlob("library/a:v1", 64<<10, 1)
	b := e.seedBlob("library/b:v1", 64<<10, 2)
	release := make(chan struct{})
	e.up.SetFault(testenv.HoldRepoBlobs("library/a", release))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	type result struct {
		resp *http.Response
		err  error
	}
	first := make(chan result, 2)
	get := func() {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, e.srv.URL+"/v2/library/a/blobs/"+a.String(), nil)
		resp, err := http.DefaultClient.Do(req)
		first <- result{resp, err}
	}
	go get()
	waitFor(t, "the first fill to start", func() bool { return len(e.proxy.Fills()) == 1 })
	resp := e.get(ctx, http.MethodGet, "/v2/library/b/blobs/"+b.String(), nil)
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("second fill past the cap: status %d, Retry-After %q; want 503 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	if code := ociError(t, resp); code != "UNAVAILABLE" {
		t.Errorf("code %s, want UNAVAILABLE", code)
	}
	resp.Body.Close()
	go get() // joins the running fill: allowed past the cap
	waitFor(t, "the second client to join", func() bool {
		f := e.proxy.Fills()
		return len(f) == 1 && f[0].Clients >= 2
	})
	close(release)
	for range 2 {
		r := <-first
		if r.err != nil {
			t.Fatal(r.err)
		}
		d, _, err := readAllHash(r.resp.Body)
		r.resp.Body.Close()
		if r.resp.StatusCode != http.StatusOK || err != nil || d != a {
			t.Fatalf("joined fill: status %d, digest %s, err %v", r.resp.StatusCode, d, err)
		}
	}
	resp = e.get(ctx, http.MethodGet, "/v2/library/b/blobs/"+b.String(), nil)
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("after the first fill ended: status %d", resp.StatusCode)
	}
}

// TestFillCapPrefetchWaits: past the cap a prefetch (nobody waiting for
// it) is not refused: it waits for a free slot, then fills its blob.
func TestFillCapPrefetchWaits(t *testing.T) {
	e := newEnv(t, envOptions{configure: func(c *config.Config) { c.Cache.Fill.MaxConcurrent = 1 }})
	a := e.seedBlob("library/a:v1", 64<<10, 1)
	b := e.seedBlob("library/b:v1", 64<<10, 2)
	release := make(chan struct{})
	e.up.SetFault(testenv.HoldRepoBlobs("library/a", release))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	clientDone := make(chan error, 1)
	go func() {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, e.srv.URL+"/v2/library/a/blobs/"+a.String(), nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			_, err = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		clientDone <- err
	}()
	waitFor(t, "the first fill to start", func() bool { return len(e.proxy.Fills()) == 1 })
	prefetched := make(chan error, 1)
	go func() {
		pctx := upstream.WithClass(ctx, upstream.ClassPrefetch)
		_, err := e.proxy.EnsureBlob(pctx, proxy.Target{Registry: "docker.io", Repository: "library/b"}, b, nil)
		prefetched <- err
	}()
	select {
	case err := <-prefetched:
		t.Fatalf("prefetch past the cap returned before a slot was free: %v", err)
	case <-time.After(300 * time.Millisecond): // not a timing assertion: any wait shows it did not fail fast
	}
	close(release)
	if err := <-clientDone; err != nil {
		t.Fatal(err)
	}
	if err := <-prefetched; err != nil {
		t.Fatalf("prefetch after the slot freed: %v", err)
	}
}
