package proxy_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stowage/stowage/config"
	"github.com/stowage/stowage/proxy"
	"github.com/stowage/stowage/proxy/cluster"
	"github.com/stowage/stowage/proxy/internal/testenv"
	"github.com/stowage/stowage/storage"
	"github.com/stowage/stowage/upstream"
)

// tagReplica is one replica of a tag-sharing cluster.
type tagReplica struct {
	*env
	tags *cluster.RedisTags
}

// newTagReplicas starts n replicas on one cache root in front of one
// upstream, sharing leases and tag state through the real Redis
// (127.0.0.1:6379) under a fresh namespace, each with its own clock
// (starting at the same instant).
func newTagReplicas(t *testing.T, n int) []*tagReplica {
	t.Helper()
	c, prefix := testenv.Redis(t)
	up := testenv.Start(t, testenv.Options{})
	root := t.TempDir()
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	out := make([]*tagReplica, n)
	for i := range out {
		leases, err := cluster.NewRedisLeases(c, prefix, 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		tags, err := cluster.NewRedisTags(leases)
		if err != nil {
			t.Fatal(err)
		}
		e := &env{t: t, up: up, upstream: up.URL, root: root, clock: &fakeClock{now: start}}
		cfg := config.Default()
		cfg.Listen = "127.0.0.1:0"
		cfg.Storage.Root = root
		cfg.Upstreams = map[string]config.Upstream{"docker.io": {
			Endpoints: []string{up.URL},
			Timeouts:  config.Timeouts{Dial: time.Second, TLSHandshake: time.Second, ResponseHeader: 2 * time.Second, Stall: 2 * time.Second},
			Retry:     config.Retry{Attempts: 3, InitialBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond},
			Internal:  true,
		}}
		if err := cfg.Validate(); err != nil {
			t.Fatal(err)
		}
		e.cfg = cfg
		store, err := storage.NewFilesystem(root)
		if err != nil {
			t.Fatal(err)
		}
		e.store = store
		factory := func(host string, u config.Upstream) (upstream.Registry, error) { return upstream.New(host, u) }
		p, err := proxy.New(cfg, store, factory, proxy.WithClock(e.clock.Now),
			proxy.WithCoordinator(leases), proxy.WithTagSync(tags))
		if err != nil {
			t.Fatal(err)
		}
		e.proxy = p
		e.srv = httptest.NewServer(p)
		e.host = strings.TrimPrefix(e.srv.URL, "http://")
		t.Cleanup(func() {
			e.srv.Close()
			_ = p.Close()
			_ = store.Close()
		})
		out[i] = &tagReplica{env: e, tags: tags}
	}
	for _, r := range out {
		waitFor(t, "the retag subscriptions", r.tags.Subscribed)
	}
	return out
}

// pullTag GETs a manifest by tag and returns the digest served.
func pullTag(t *testing.T, e *env, repo, tag string) string {
	t.Helper()
	resp := e.get(t.Context(), http.MethodGet, "/v2/"+repo+"/manifests/"+tag,
		http.Header{"Accept": {"application/vnd.oci.image.manifest.v1+json", "application/vnd.docker.distribution.manifest.v2+json"}})
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Errorf("%s:%s: %s", repo, tag, resp.Status)
	}
	return resp.Header.Get("Docker-Content-Digest")
}

// upstreamManifestRequests counts the upstream's manifest HEADs and GETs.
func upstreamManifestRequests(up *testenv.Registry) int {
	return up.Count(testenv.ManifestHead) + up.Count(testenv.ManifestGet)
}

// TestClusterTagOneHeadPerTTL: after the tag TTL, ten concurrent pulls of
// a tag spread over two replicas cost exactly one upstream HEAD for the
// cluster (one replica revalidates, the other takes its answer).
func TestClusterTagOneHeadPerTTL(t *testing.T) {
	t.Parallel()
	rs := newTagReplicas(t, 2)
	rs[0].seedBlob("library/tagged:v1", 4<<10, 1)
	want := pullTag(t, rs[0].env, "library/tagged", "v1")
	pullTag(t, rs[1].env, "library/tagged", "v1")
	for _, r := range rs {
		r.clock.Advance(rs[0].cfg.Cache.TagTTL + time.Second)
	}
	rs[0].up.ResetCounts()
	var wg sync.WaitGroup
	for i := range 10 {
		wg.Go(func() {
			if got := pullTag(t, rs[i%2].env, "library/tagged", "v1"); got != want {
				t.Errorf("pull %d: digest %s, want %s", i, got, want)
			}
		})
	}
	wg.Wait()
	if h, g := rs[0].up.Count(testenv.ManifestHead), rs[0].up.Count(testenv.ManifestGet); h != 1 || g != 0 {
		t.Errorf("upstream: %d manifest HEADs and %d GETs for 10 pulls over 2 replicas, want 1 HEAD and 0 GETs", h, g)
	}
}

// TestClusterRetagSeenOnce: a retag upstream seen by replica A (after the
// TTL) is served by replica B without B asking the upstream — through the
// fetched-at A left when B's copy is stale too, and through the retag
// message when B's in-memory copy still looks fresh (B's clock behind).
func TestClusterRetagSeenOnce(t *testing.T) {
	t.Parallel()
	rs := newTagReplicas(t, 2)
	a, b := rs[0], rs[1]
	a.seedBlob("library/moving:v1", 4<<10, 1)
	pullTag(t, a.env, "library/moving", "v1")
	pullTag(t, b.env, "library/moving", "v1")

	// Both stale: A revalidates and finds the retag; B takes A's answer.
	a.seedBlob("library/moving:v1", 4<<10, 2)
	ttl := a.cfg.Cache.TagTTL
	a.clock.Advance(ttl + time.Second)
	b.clock.Advance(ttl + time.Second)
	second := pullTag(t, a.env, "library/moving", "v1")
	a.up.ResetCounts()
	if got := pullTag(t, b.env, "library/moving", "v1"); got != second {
		t.Errorf("after the TTL, B serves %s, want A's new %s", got, second)
	}
	if n := upstreamManifestRequests(a.up); n != 0 {
		t.Errorf("after the TTL, B asked the upstream %d times, want 0", n)
	}

	// B's in-memory copy fresh for B, A's stale: A sees the next retag
	// and tells B, which drops its copy and reads A's. B's clock moves
	// too, staying within a minute of A's (a time record further ahead
	// of a replica's clock counts as stale there).
	a.seedBlob("library/moving:v1", 4<<10, 3)
	a.clock.Advance(ttl + time.Second)
	b.clock.Advance(ttl - 58*time.Second)
	third := pullTag(t, a.env, "library/moving", "v1")
	if third == second {
		t.Fatal("the upstream retag was not seen by A")
	}
	a.up.ResetCounts()
	deadline := time.Now().Add(5 * time.Second)
	got := pullTag(t, b.env, "library/moving", "v1")
	for got != third && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
		got = pullTag(t, b.env, "library/moving", "v1")
	}
	if got != third {
		t.Errorf("B still serves %s after A's retag message, want %s", got, third)
	}
	if n := upstreamManifestRequests(a.up); n != 0 {
		t.Errorf("B asked the upstream %d times, want 0", n)
	}
}
