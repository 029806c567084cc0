package proxy_test

import (
	"context"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/validate"

	"github.com/stowage/stowage/config"
	"github.com/stowage/stowage/proxy/internal/testenv"
)

// TestTagTTL: a retagged upstream image is seen after the TTL and not
// before; revalidation of an unchanged tag costs a HEAD, not a GET.
func TestTagTTL(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{configure: func(c *config.Config) { c.Cache.TagTTL = 10 * time.Minute }})
	a := testenv.DockerImage(t, 1, 512)
	b := testenv.DockerImage(t, 1, 512)
	da, _ := a.Digest()
	db, _ := b.Digest()
	e.up.Push(t, "library/app:latest", a)
	digestNow := func() string {
		t.Helper()
		d, err := remote.Head(e.ref("app:latest"))
		if err != nil {
			t.Fatal(err)
		}
		return d.Digest.String()
	}
	if got := digestNow(); got != da.String() {
		t.Fatalf("first pull %s, want %s", got, da)
	}
	e.up.Push(t, "library/app:latest", b) // retag upstream
	e.up.ResetCounts()
	e.clock.Advance(9 * time.Minute)
	if got := digestNow(); got != da.String() {
		t.Fatalf("before TTL: %s, want the old %s", got, da)
	}
	if n := e.up.Count(testenv.ManifestHead) + e.up.Count(testenv.ManifestGet); n != 0 {
		t.Fatalf("fresh tag asked the upstream %d times", n)
	}
	e.clock.Advance(2 * time.Minute)
	if got := digestNow(); got != db.String() {
		t.Fatalf("after TTL: %s, want the new %s", got, db)
	}
	if e.up.Count(testenv.ManifestHead) != 1 {
		t.Fatalf("revalidation HEADs = %d, want 1", e.up.Count(testenv.ManifestHead))
	}
	// Unchanged tag after another TTL: one HEAD, no GET.
	e.up.ResetCounts()
	e.clock.Advance(11 * time.Minute)
	if got := digestNow(); got != db.String() {
		t.Fatalf("unchanged tag: %s", got)
	}
	if h, g := e.up.Count(testenv.ManifestHead), e.up.Count(testenv.ManifestGet); h != 1 || g != 0 {
		t.Fatalf("unchanged revalidation: %d HEADs, %d GETs; want 1 and 0", h, g)
	}
}

// TestUpstreamDown: after warm-up the upstream stops. Cached tags (fresh and
// stale) and digests still pull; a never-seen image fails with an OCI error
// quickly.
func TestUpstreamDown(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	img := testenv.DockerImage(t, 2, 2048)
	e.up.Push(t, "library/warm:v1", img)
	d, _ := img.Digest()
	if _, err := remote.Image(e.ref("warm:v1")); err != nil {
		t.Fatal(err)
	}
	pullAll := func(ref string) {
		t.Helper()
		im, err := remote.Image(e.ref(ref))
		if err != nil {
			t.Fatalf("pull %s: %v", ref, err)
		}
		if err := validate.Image(im); err != nil {
			t.Fatalf("pull %s: %v", ref, err)
		}
	}
	pullAll("warm:v1") // warms every blob
	e.up.Close()

	pullAll("warm:v1")
	pullAll("warm@" + d.String())
	e.clock.Advance(time.Hour) // stale: revalidation fails, stale copy served
	pullAll("warm:v1")

	// A hang shows up as the client's deadline, not a timing assertion.
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	resp := e.get(ctx, http.MethodGet, "/v2/library/never-seen/manifests/v1", nil)
	defer resp.Body.Close()
	if resp.StatusCode < 500 || ociError(t, resp) != "UNAVAILABLE" {
		t.Fatalf("never-seen image with upstream down: status %d", resp.StatusCode)
	}
}

// TestMaxStale: past max_stale a stale tag is an error, not a stale serve.
func TestMaxStale(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{configure: func(c *config.Config) {
		c.Cache.TagTTL = time.Minute
		c.Cache.MaxStale = time.Hour
	}})
	e.up.Push(t, "library/ms:v1", testenv.DockerImage(t, 1, 256))
	if _, err := remote.Head(e.ref("ms:v1")); err != nil {
		t.Fatal(err)
	}
	e.up.Close()
	e.clock.Advance(30 * time.Minute)
	if _, err := remote.Head(e.ref("ms:v1")); err != nil {
		t.Fatalf("within max_stale: %v", err)
	}
	e.clock.Advance(2 * time.Hour)
	resp := e.get(context.Background(), http.MethodGet, "/v2/library/ms/manifests/v1", nil)
	defer resp.Body.Close()
	if resp.StatusCode < 500 {
		t.Fatalf("beyond max_stale: status %d", resp.StatusCode)
	}
}

// TestHangingUpstream: an upstream that accepts connections and never
// answers does not hang clients of cached content, and uncached requests
// fail within the configured timeouts.
func TestHangingUpstream(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var accepted atomic.Int64
	go func() {
		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			conns = append(conns, c) // never answer
		}
	}()
	// Warm a cache through a working upstream, then reopen it in front of
	// the hanging one.
	warm := newEnv(t, envOptions{})
	img := testenv.DockerImage(t, 1, 1024)
	warm.up.Push(t, "library/cached:v1", img)
	im, err := remote.Image(warm.ref("cached:v1"))
	if err != nil {
		t.Fatal(err)
	}
	if err := validate.Image(im); err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, envOptions{root: warm.root, upstreamURL: "http://" + ln.Addr().String()})
	// The warm env's clock (the same fixed instant) wrote the tag: fresh here.

	// A hang shows up as the client's deadline, not a timing assertion.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	im, err = remote.Image(e.ref("cached:v1"), remote.WithContext(ctx))
	if err != nil {
		t.Fatal(err)
	}
	if err := validate.Image(im); err != nil {
		t.Fatal(err)
	}
	if n := accepted.Load(); n != 0 {
		t.Fatalf("a cached pull opened %d connections to the hanging upstream", n)
	}
	resp := e.get(ctx, http.MethodGet, "/v2/library/uncached/manifests/v1", nil)
	resp.Body.Close()
	if resp.StatusCode < 500 {
		t.Fatalf("uncached behind hanging upstream: status %d", resp.StatusCode)
	}
	if accepted.Load() == 0 {
		t.Fatal("the uncached request never reached the upstream")
	}
}

// TestRateLimitedServesStale: a 429 (with Retry-After) on the revalidation
// of a cached tag is a stale serve, not an error.
func TestRateLimitedServesStale(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	img := testenv.DockerImage(t, 1, 256)
	e.up.Push(t, "library/limited:v1", img)
	want, _ := img.Digest()
	if _, err := remote.Head(e.ref("limited:v1")); err != nil {
		t.Fatal(err)
	}
	e.up.SetFault(func(w http.ResponseWriter, r *http.Request, next http.Handler) {
		if r.URL.Path == "/v2/" {
			next.ServeHTTP(w, r)
			return
		}
		w.Header().Set("Retry-After", "1")
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusTooManyRequests)
		_, _ = w.Write([]byte(`{"errors":[{"code":"TOOMANYREQUESTS","message":"pull rate limit"}]}`))
	})
	e.clock.Advance(time.Hour)
	d, err := remote.Head(e.ref("limited:v1"))
	if err != nil {
		t.Fatalf("rate-limited revalidation: %v", err)
	}
	if d.Digest != want {
		t.Fatalf("digest %s, want %s", d.Digest, want)
	}
	if e.up.Count(testenv.ManifestHead) < 2 {
		t.Fatalf("revalidation HEADs = %d: the upstream was not asked", e.up.Count(testenv.ManifestHead))
	}
	// An uncached tag gets the rate-limit error with Retry-After.
	resp := e.get(context.Background(), http.MethodGet, "/v2/library/limited/manifests/other", nil)
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" || ociError(t, resp) != "TOOMANYREQUESTS" {
		t.Fatalf("uncached under rate limit: %d Retry-After=%q", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
}

// TestFailedUpstreamNotRetriedPerRequest: once a revalidation failed, the
// next stale requests are served at once, without asking the upstream again
// until the back-off window passed.
func TestFailedUpstreamNotRetriedPerRequest(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	e.up.Push(t, "library/flaky:v1", testenv.DockerImage(t, 1, 256))
	if _, err := remote.Head(e.ref("flaky:v1")); err != nil {
		t.Fatal(err)
	}
	e.up.SetFault(func(w http.ResponseWriter, r *http.Request, next http.Handler) {
		http.Error(w, "down", http.StatusServiceUnavailable)
	})
	e.clock.Advance(time.Hour)
	e.up.ResetCounts()
	if _, err := remote.Head(e.ref("flaky:v1")); err != nil {
		t.Fatalf("first stale serve: %v", err)
	}
	first := e.up.Count(testenv.ManifestHead)
	if first == 0 {
		t.Fatal("the first stale request did not try the upstream")
	}
	for range 5 {
		if _, err := remote.Head(e.ref("flaky:v1")); err != nil {
			t.Fatalf("stale serve: %v", err)
		}
	}
	if n := e.up.Count(testenv.ManifestHead); n != first {
		t.Fatalf("upstream HEADs grew from %d to %d within the back-off window", first, n)
	}
	e.clock.Advance(11 * time.Second)
	if _, err := remote.Head(e.ref("flaky:v1")); err != nil {
		t.Fatal(err)
	}
	if n := e.up.Count(testenv.ManifestHead); n == first {
		t.Fatal("the upstream was not tried again after the window")
	}
}
