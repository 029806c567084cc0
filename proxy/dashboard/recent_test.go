package dashboard_test

import (
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/stowage/stowage/config"
	"github.com/stowage/stowage/proxy/dashboard"
	"github.com/stowage/stowage/proxy/internal/testenv"
	"github.com/stowage/stowage/storage/evict"
)

// engineUsage plugs a real eviction engine into the dashboard, as
// cmd/proxy's indexUsage does, showing it against capa and the
// filesystem of root.
type engineUsage struct {
	eng  *evict.Engine
	capa int64
	root string
}

func (u engineUsage) Usage() (used, capacity, fsTotal, fsFree int64, objects int) {
	used, objects = u.eng.Index().Usage()
	if u.root != "" {
		if total, free, err := evict.Statfs(u.root)(); err == nil {
			fsTotal, fsFree = int64(total), int64(free) //nolint:gosec // filesystem sizes fit
		}
	}
	return used, u.capa, fsTotal, fsFree, objects
}

func (u engineUsage) RecentEvictions() []dashboard.Eviction { return u.eng.RecentEvictions() }

// newEngine builds an eviction engine over the env's store with an index
// of what is cached now.
func newEngine(t *testing.T, e *env, p evict.Policy) *evict.Engine {
	t.Helper()
	eng, err := evict.New(e.store, p)
	if err != nil {
		t.Fatal(err)
	}
	if err := eng.Index().Rebuild(t.Context(), e.store); err != nil {
		t.Fatal(err)
	}
	return eng
}

// TestAPIRecentEvictions: the blobs a real eviction pass removes show in
// /api/v1/activity, newest first, with their size and reason.
func TestAPIRecentEvictions(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	e.up.Push(t, "team/app:v1", testenv.OCIImage(t, 3, 16<<10))
	e.pull("docker.io/team/app:v1")
	eng := newEngine(t, e, evict.Policy{MaxSize: 1}) // everything but manifests goes
	e.dash.SetUsage(engineUsage{eng: eng, capa: 1 << 20})

	var a dashboard.Activity
	e.getJSON("/api/v1/activity", &a)
	if !a.EvictionsTracked || len(a.Evictions) != 0 {
		t.Fatalf("before a pass: %+v", a)
	}
	res, err := eng.Pass(t.Context())
	if err != nil || res.Objects != 4 { // config and 3 layers
		t.Fatalf("pass: %+v, %v", res, err)
	}
	e.getJSON("/api/v1/activity", &a)
	var got []digest.Digest
	var size int64
	for _, ev := range a.Evictions {
		got = append(got, ev.Digest)
		size += ev.Size
		if ev.Reason != evict.ReasonSize || ev.Time.IsZero() {
			t.Errorf("eviction %+v", ev)
		}
	}
	want := slices.Clone(res.Evicted)
	slices.Reverse(want) // newest first
	if !slices.Equal(got, want) || size != res.Bytes {
		t.Errorf("evictions %v (%d bytes), want %v (%d bytes)", got, size, want, res.Bytes)
	}
}

// TestAPIRecentStaleServes: a tag served stale while its upstream is down
// shows in /api/v1/activity with its repository, tag, age and error.
func TestAPIRecentStaleServes(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{configure: func(c *config.Config) { c.Cache.TagTTL = time.Nanosecond }})
	e.up.Push(t, "team/app:v1", testenv.OCIImage(t, 1, 1<<10))
	e.pull("docker.io/team/app:v1")
	var a dashboard.Activity
	e.getJSON("/api/v1/activity", &a)
	if a.RecentStaleServes == nil || len(a.RecentStaleServes) != 0 {
		t.Fatalf("before a stale serve: %+v", a.RecentStaleServes)
	}
	e.up.Close()
	if code, b := e.call(http.MethodHead, "/v2/docker.io/team/app/manifests/v1", "", "", ""); code != http.StatusOK {
		t.Fatalf("stale HEAD: %d %s", code, b)
	}
	e.getJSON("/api/v1/activity", &a)
	if len(a.RecentStaleServes) != 1 {
		t.Fatalf("recent stale serves: %+v", a.RecentStaleServes)
	}
	s := a.RecentStaleServes[0]
	if s.Repository != "docker.io/team/app" || s.Tag != "v1" || s.Upstream != "docker.io" ||
		s.Error == "" || s.AgeSeconds < 0 || s.Digest == "" || s.Time.IsZero() {
		t.Errorf("stale serve: %+v", s)
	}
	if len(a.StaleServes) != 1 || a.StaleServes[0].Total != 1 {
		t.Errorf("stale serve totals: %+v", a.StaleServes)
	}
}
