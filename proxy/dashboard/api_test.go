package dashboard_test

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/stowage/stowage/config"
	"github.com/stowage/stowage/proxy"
	"github.com/stowage/stowage/proxy/dashboard"
	"github.com/stowage/stowage/proxy/internal/testenv"
	"github.com/stowage/stowage/proxy/prefetch"
)

// readPaths are every GET the page makes.
var readPaths = []string{
	"/api/v1/session", "/api/v1/overview", "/api/v1/upstreams", "/api/v1/stats", "/api/v1/stats?range=day",
	"/api/v1/activity", "/api/v1/fills", "/api/v1/repositories", "/api/v1/prefetch",
}

// TestAPIAuth: every read needs the admin token unless the dashboard is
// public read-only; a wrong token is refused either way; writes always
// need the token; the page's static files need none.
func TestAPIAuth(t *testing.T) {
	t.Parallel()
	for _, public := range []bool{false, true} {
		e := newEnv(t, envOptions{public: public})
		for _, p := range readPaths {
			noToken := http.StatusUnauthorized
			if public {
				noToken = http.StatusOK
			}
			for token, want := range map[string]int{"": noToken, "wrong": http.StatusUnauthorized, testToken: http.StatusOK} {
				code, body := e.call(http.MethodGet, p, token, "", "")
				if code != want {
					t.Errorf("public=%v GET %s token %q: %d, want %d: %s", public, p, token, code, want, body)
				}
				if code == http.StatusUnauthorized && !strings.Contains(string(body), `"error"`) {
					t.Errorf("GET %s: 401 without a JSON error: %s", p, body)
				}
			}
		}
		// Writes go to the admin API: the token, always.
		for _, token := range []string{"", "wrong"} {
			if code, body := e.call(http.MethodPost, "/api/v1/prefetch", token, "text/plain", "team/app:v1\n"); code != http.StatusUnauthorized {
				t.Errorf("public=%v POST prefetch token %q: %d %s", public, token, code, body)
			}
			if code, _ := e.call(http.MethodDelete, "/api/v1/fills/sha256:"+strings.Repeat("a", 64), token, "", ""); code != http.StatusUnauthorized {
				t.Errorf("public=%v DELETE fill token %q: %d", public, token, code)
			}
		}
		if code, _ := e.call(http.MethodDelete, "/api/v1/fills/sha256:"+strings.Repeat("a", 64), testToken, "", ""); code != http.StatusNotFound {
			t.Errorf("DELETE of no fill with the token: %d", code)
		}
		code, body := e.call(http.MethodGet, "/ui/", "", "", "")
		if code != http.StatusOK || !strings.Contains(string(body), "<title>Stowage</title>") {
			t.Errorf("GET /ui/: %d %.100s", code, body)
		}
		for _, asset := range []string{"/ui/app.js", "/ui/app.css"} {
			if code, _ := e.call(http.MethodGet, asset, "", "", ""); code != http.StatusOK {
				t.Errorf("GET %s: %d", asset, code)
			}
		}
		if code, _ := e.call(http.MethodGet, "/ui", "", "", ""); code != http.StatusMovedPermanently {
			t.Errorf("GET /ui: %d", code)
		}
	}
}

// TestAPISession reports what the caller may do.
func TestAPISession(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{public: true})
	for token, want := range map[string]map[string]any{
		"":        {"authenticated": false, "can_write": false, "public_read_only": true},
		testToken: {"authenticated": true, "can_write": true, "public_read_only": true},
	} {
		_, b := e.call(http.MethodGet, "/api/v1/session", token, "", "")
		var got map[string]any
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatal(err)
		}
		for k, v := range want {
			if got[k] != v {
				t.Errorf("token %q: %s = %v, want %v", token, k, got[k], v)
			}
		}
		if got["replica"] != "replica-a" || got["version"] != "test" {
			t.Errorf("session: %v", got)
		}
	}
}

// TestAPIOverviewAfterPulls: the overview's numbers after a known
// sequence of pulls: one cold pull (every blob a miss, fetched upstream)
// and one warm pull (every blob a hit, nothing fetched).
func TestAPIOverviewAfterPulls(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	e.up.Push(t, "team/app:v1", testenv.OCIImage(t, 3, 64<<10))
	e.up.ResetCounts()
	blobs, size := e.pull("team/app:v1")
	e.pull("team/app:v1")

	// The request metrics are recorded when a handler returns, which can be
	// just after its client has read the last byte.
	var o dashboard.Overview
	waitFor(t, "the pulls' responses to be counted", func() bool {
		e.getJSON("/api/v1/overview", &o)
		return o.Traffic.ServedBytes >= float64(2*size)
	})
	tr := o.Traffic
	if tr.BlobMisses != float64(blobs) || tr.BlobHits != float64(blobs) {
		t.Errorf("blob hits %v misses %v, want %d each", tr.BlobHits, tr.BlobMisses, blobs)
	}
	if tr.UpstreamBytes != float64(size) || e.up.BlobBytes() != size {
		t.Errorf("upstream bytes %v (upstream sent %d), want %d", tr.UpstreamBytes, e.up.BlobBytes(), size)
	}
	if tr.ServedBytes < float64(2*size) || tr.SavedBytes != tr.ServedBytes-tr.UpstreamBytes {
		t.Errorf("served %v saved %v, want at least %d served", tr.ServedBytes, tr.SavedBytes, 2*size)
	}
	if tr.HitRatio != tr.Hits/(tr.Hits+tr.Misses) || tr.HitRatio <= 0 || tr.HitRatio >= 1 {
		t.Errorf("hit ratio %v of %v/%v", tr.HitRatio, tr.Hits, tr.Misses)
	}
	if o.Usage.Tracked || o.Usage.FSTotal <= 0 || o.Usage.FSFree <= 0 {
		t.Errorf("usage without an index: %+v", o.Usage)
	}
	if o.Replica != "replica-a" || o.FillsInFlight != 0 || len(o.Upstreams) != 1 ||
		o.Upstreams[0].Host != "docker.io" || o.Upstreams[0].State != "healthy" ||
		o.Upstreams[0].UpstreamBytes != float64(size) {
		t.Errorf("overview: %+v", o)
	}

	// The sampler turns the counters into plot points.
	waitFor(t, "a stats point with the pulls", func() bool {
		var st dashboard.Stats
		e.getJSON("/api/v1/stats?range=hour", &st)
		var up float64
		for _, p := range st.Points {
			up += p.UpstreamBytes
		}
		return st.Range == "hour" && st.StepSecs == 0.2 && up == float64(size)
	})
	var day dashboard.Stats
	e.getJSON("/api/v1/stats?range=day", &day)
	if day.Range != "day" || day.StepSecs != 300 {
		t.Errorf("day stats: %+v", day)
	}
	if code, _ := e.call(http.MethodGet, "/api/v1/stats?range=week", testToken, "", ""); code != http.StatusBadRequest {
		t.Errorf("range=week: %d", code)
	}
}

// fakeUsage stands in for the usage index (storage's, not merged yet).
type fakeUsage struct{}

func (fakeUsage) Usage() (int64, int64, int64, int64, int) { return 300, 1000, 5000, 2000, 7 }
func (fakeUsage) RecentEvictions() []dashboard.Eviction {
	return []dashboard.Eviction{{Time: time.Unix(1, 0).UTC(), Digest: digest.FromString("x"), Size: 42, Reason: "cap"}}
}

// TestAPIUsageSource: a plugged usage index replaces the filesystem
// numbers, and its evictions show in the activity.
func TestAPIUsageSource(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{usage: fakeUsage{}})
	var o dashboard.Overview
	e.getJSON("/api/v1/overview", &o)
	if (o.Usage != dashboard.Usage{Tracked: true, Used: 300, Cap: 1000, Objects: 7, FSTotal: 5000, FSFree: 2000}) {
		t.Errorf("usage: %+v", o.Usage)
	}
	var a dashboard.Activity
	e.getJSON("/api/v1/activity", &a)
	if !a.EvictionsTracked || len(a.Evictions) != 1 || a.Evictions[0].Size != 42 {
		t.Errorf("evictions: %+v", a)
	}
}

// TestAPIContents: repositories, a repository's tags, a manifest's
// layers; search; pins; errors.
func TestAPIContents(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	e.up.Push(t, "team/app:v1", testenv.OCIImage(t, 2, 32<<10))
	idx, _ := testenv.MultiArchIndex(t)
	e.up.PushIndex(t, "team/multi:v2", idx)
	_, size := e.pull("team/app:v1")
	// Prefetch the index: it pins it.
	code, b := e.call(http.MethodPost, "/api/v1/prefetch?name=mine", testToken, "text/plain", "team/multi:v2\n")
	if code != http.StatusAccepted {
		t.Fatalf("prefetch: %d %s", code, b)
	}
	var job prefetch.Job
	if err := json.Unmarshal(b, &job); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the prefetch job", func() bool {
		var j prefetch.Job
		e.getJSON("/api/v1/prefetch/"+job.ID, &j)
		return j.State.Done()
	})

	var list struct {
		Repositories []dashboard.Repository `json:"repositories"`
		Truncated    bool                   `json:"truncated"`
	}
	e.getJSON("/api/v1/repositories", &list)
	if len(list.Repositories) != 2 || list.Repositories[0] != (dashboard.Repository{Name: "docker.io/team/app", Upstream: "docker.io", Path: "team/app", Tags: 1}) {
		t.Fatalf("repositories: %+v", list)
	}
	e.getJSON("/api/v1/repositories?q=MULTI", &list)
	if len(list.Repositories) != 1 || list.Repositories[0].Path != "team/multi" {
		t.Fatalf("search: %+v", list)
	}

	var repo dashboard.RepositoryDetail
	e.getJSON("/api/v1/repository?name=docker.io/team/app", &repo)
	if len(repo.TagList) != 1 || repo.TagList[0].Tag != "v1" || repo.TagList[0].Pinned || !repo.TagList[0].Complete ||
		repo.TagList[0].FetchedAt == nil {
		t.Fatalf("repository: %+v", repo)
	}
	tag := repo.TagList[0]
	if repo.Pull.Docker != "docker pull "+e.host+"/docker.io/team/app:<tag>" || !strings.Contains(repo.Pull.Podman, e.host+"/docker.io/team/app") ||
		!strings.HasPrefix(repo.Pull.Containerd, "ctr images pull --plain-http "+e.host) {
		t.Errorf("pull commands: %+v", repo.Pull)
	}

	var m dashboard.Manifest
	e.getJSON("/api/v1/manifest?repo=docker.io/team/app&digest="+url.QueryEscape(string(tag.Digest)), &m)
	var layers int64
	for _, l := range m.Layers {
		layers += l.Size
		if !l.Cached {
			t.Errorf("layer not cached: %+v", l)
		}
	}
	if len(m.Layers) != 2 || m.Config == nil || m.Config.Size+layers != size || m.TotalSize != size+m.Size || tag.Size != m.TotalSize {
		t.Errorf("manifest: %+v (pulled %d bytes)", m, size)
	}

	var multi dashboard.RepositoryDetail
	e.getJSON("/api/v1/repository?name=docker.io/team/multi", &multi)
	mt := multi.TagList[0]
	if !mt.Pinned || len(mt.PinnedBy) != 1 || mt.PinnedBy[0] != "mine" || len(mt.Platforms) < 2 || !mt.Complete {
		t.Errorf("multi-arch tag: %+v", mt)
	}
	var ix dashboard.Manifest
	e.getJSON("/api/v1/manifest?repo=docker.io/team/multi&digest="+url.QueryEscape(string(mt.Digest)), &ix)
	if len(ix.Manifests) < 2 || ix.Layers != nil || !ix.Manifests[0].Cached || ix.Manifests[0].Platform == "" {
		t.Errorf("index: %+v", ix)
	}

	for path, want := range map[string]int{
		"/api/v1/repository":                        http.StatusBadRequest,
		"/api/v1/repository?name=docker.io/no/such": http.StatusNotFound,
		"/api/v1/manifest?repo=docker.io/team/app":  http.StatusBadRequest,
		"/api/v1/manifest?repo=docker.io/team/app&digest=" + digest.FromString("nope").String(): http.StatusNotFound,
		"/api/v1/prefetch/nosuchjob": http.StatusNotFound,
	} {
		if code, b := e.call(http.MethodGet, path, testToken, "", ""); code != want {
			t.Errorf("GET %s: %d, want %d: %s", path, code, want, b)
		}
	}
}

// TestAPIActivityFills: a running fill shows with its progress, the
// replica and the clients; GET /api/v1/fills keeps the admin API's shape.
func TestAPIActivityFills(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{public: true})
	img, layer := testenv.RawBlobImage(t, 1<<20, 7)
	e.up.Push(t, "team/slow:v1", img)
	d, _ := layer.Digest()
	release := make(chan struct{})
	e.up.SetFault(testenv.StallBlobs(256<<10, release))
	done := make(chan error, 1)
	go func() {
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, e.srv.URL+"/v2/team/slow/blobs/"+d.String(), nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			_, err = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		done <- err
	}()
	var a dashboard.Activity
	waitFor(t, "a fill at 256 KiB", func() bool {
		e.getJSON("/api/v1/activity", &a)
		return len(a.Fills) == 1 && a.Fills[0].Written == 256<<10
	})
	f := a.Fills[0]
	if f.Replica != "replica-a" || f.Clients != 1 || f.Size != 1<<20 || f.Progress != 0.25 || f.Repo != "team/slow" || f.Host != "docker.io" {
		t.Errorf("fill: %+v", f)
	}
	var fills []proxy.FillInfo
	e.getJSON("/api/v1/fills", &fills)
	if len(fills) != 1 || fills[0].Digest.String() != d.String() {
		t.Errorf("fills: %+v", fills)
	}
	if a.EvictionsTracked || a.Evictions == nil || a.StaleServes == nil {
		t.Errorf("activity without an index: %+v", a)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestAPIUpstreamDown: an upstream that failed is shown down, with its
// last error and the end of its down window; a rate limit seen from
// another is shown with it.
func TestAPIUpstreamDown(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + ln.Addr().String()
	_ = ln.Close() // connections are refused from now on
	e := newEnv(t, envOptions{configure: func(c *config.Config) {
		c.Upstreams["quay.io"] = config.Upstream{Endpoints: []string{dead}, Internal: true,
			Retry: config.Retry{Attempts: 1, InitialBackoff: time.Millisecond, MaxBackoff: time.Millisecond}}
	}})
	code, _ := e.call(http.MethodGet, "/v2/quay.io/team/app/manifests/"+digest.FromString("m").String(), "", "", "")
	if code < 500 {
		t.Fatalf("manifest from a dead upstream: %d", code)
	}
	e.proxy.ObserveRateLimit("docker.io", 100, 42)
	var ups struct {
		Upstreams []dashboard.Upstream `json:"upstreams"`
	}
	e.getJSON("/api/v1/upstreams", &ups)
	if len(ups.Upstreams) != 2 {
		t.Fatalf("upstreams: %+v", ups)
	}
	down, up := ups.Upstreams[0], ups.Upstreams[1]
	if down.Host != "quay.io" || down.State != "down" || !down.Down || down.DownUntil == nil || down.Failures != 1 ||
		down.LastError == "" || down.LastErrorAt == nil || len(down.Endpoints) != 1 {
		t.Errorf("down upstream: %+v", down)
	}
	if up.Host != "docker.io" || up.State != "healthy" || up.RateLimit == nil || *up.RateLimit != (dashboard.RateLimit{Limit: 100, Remaining: 42}) {
		t.Errorf("healthy upstream: %+v", up)
	}
}

// buildingIndex is a usage index still being built.
type buildingIndex struct{ fakeUsage }

func (buildingIndex) IsReady() bool { return false }

// TestAPIUsageIndexing: an index plugged in after New that is not ready
// yet shows as indexing, with the filesystem's numbers meanwhile.
func TestAPIUsageIndexing(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	e.dash.SetUsage(buildingIndex{})
	var o dashboard.Overview
	e.getJSON("/api/v1/overview", &o)
	if o.Usage.Tracked || !o.Usage.Indexing || o.Usage.FSTotal <= 0 {
		t.Errorf("usage while indexing: %+v", o.Usage)
	}
	e.dash.SetUsage(fakeUsage{})
	var o2 dashboard.Overview
	e.getJSON("/api/v1/overview", &o2)
	if !o2.Usage.Tracked || o2.Usage.Indexing || o2.Usage.Cap != 1000 {
		t.Errorf("usage once plugged: %+v", o2.Usage)
	}
}
