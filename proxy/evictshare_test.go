package proxy_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/stowage/stowage/proxy"
	"github.com/stowage/stowage/proxy/cluster"
	"github.com/stowage/stowage/proxy/internal/testenv"
	"github.com/stowage/stowage/storage"
	"github.com/stowage/stowage/storage/evict"
	"github.com/stowage/stowage/storage/evict/lead"
)

// removals records every replica's blob removals, to show that passes of
// two replicas never overlap.
type removals struct {
	mu      sync.Mutex
	active  map[string]int // replica -> removals running
	by      map[string]int // replica -> blobs removed
	overlap []string
}

// count returns how many blobs each replica removed.
func (r *removals) count() map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]int, len(r.by))
	for k, v := range r.by {
		out[k] = v
	}
	return out
}

// evictStore is one replica's store as its engine sees it.
type evictStore struct {
	*storage.Store
	name string
	rec  *removals
}

func (s *evictStore) RemoveBlob(ctx context.Context, d digest.Digest, repos []string) (int, error) {
	s.rec.mu.Lock()
	for other, n := range s.rec.active {
		if other != s.name && n > 0 {
			s.rec.overlap = append(s.rec.overlap, fmt.Sprintf("%s removed %s while %s was removing", s.name, d, other))
		}
	}
	s.rec.active[s.name]++
	s.rec.mu.Unlock()
	n, err := s.Store.RemoveBlob(ctx, d, repos)
	s.rec.mu.Lock()
	s.rec.active[s.name]--
	s.rec.by[s.name]++
	s.rec.mu.Unlock()
	return n, err
}

// evictReplica is one in-process proxy with its eviction engine.
type evictReplica struct {
	name string
	e    *env
	eng  *evict.Engine
	reg  *prometheus.Registry
	stop func()
}

// TestClusterEvictionSharedAcrossReplicas: three replicas on one cache
// directory, the real Redis and a real upstream registry, a 38 MiB cap.
// Images are pulled through all three; the replica holding the eviction
// lease evicts for the cluster: the cap holds for the whole cache (the
// shared usage matches the bytes on disk), no two replicas evict at once,
// a blob pulled again on another replica is not evicted as unused, nor
// one another replica is streaming to a slow client, the pinned image
// survives, evicted content refetches with the right digest,
// every replica's metrics show the cluster's usage; when the leader stops,
// another replica takes over; with the upstream stopped the pinned image
// still pulls from every replica.
func TestClusterEvictionSharedAcrossReplicas(t *testing.T) {
	const (
		mib   = int64(1) << 20
		limit = 38 * mib
		layer = 2 * mib
		grace = 3 * time.Second
	)
	rc, prefix := testenv.Redis(t)
	up := testenv.Start(t, testenv.Options{})
	root := t.TempDir()
	rec := &removals{active: map[string]int{}, by: map[string]int{}}
	var reps []*evictReplica
	for i, name := range []string{"a", "b", "c"} {
		leases, err := cluster.NewRedisLeases(rc, prefix, 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		reg := prometheus.NewRegistry()
		o := envOptions{coord: leases, shared: up, root: root, proxyOpts: []proxy.Option{proxy.WithRegistry(reg)}}
		if i == 0 {
			o.shared = nil
		}
		e := newEnv(t, o)
		if i == 0 {
			up, root = e.up, e.root
			o.shared, o.root = up, root
		}
		shared, err := cluster.NewRedisEvict(leases)
		if err != nil {
			t.Fatal(err)
		}
		ld, err := lead.New(shared, time.Second, lead.WithInterval(100*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		eng, err := evict.New(&evictStore{Store: e.store, name: name, rec: rec},
			evict.Policy{MaxSize: limit, Grace: grace},
			evict.WithInUse(e.proxy), evict.WithRegisterer(reg),
			evict.WithCluster(ld, shared, 100*time.Millisecond),
			evict.WithIntervals(500*time.Millisecond, time.Minute, time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		e.proxy.SetCacheHooks(eng)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); _ = eng.Run(ctx) }()
		var once sync.Once
		r := &evictReplica{name: name, e: e, eng: eng, reg: reg, stop: func() { once.Do(func() { cancel(); <-done }) }}
		t.Cleanup(r.stop)
		reps = append(reps, r)
	}
	ctx := t.Context()
	leaderOf := func(rs []*evictReplica) *evictReplica {
		var l *evictReplica
		waitFor(t, "one eviction leader", func() bool {
			l = nil
			n := 0
			for _, r := range rs {
				if r.eng.Role() == lead.Leader {
					l, n = r, n+1
				}
			}
			return n == 1
		})
		return l
	}
	leader := leaderOf(reps)
	var others []*evictReplica
	for _, r := range reps {
		if r != leader {
			others = append(others, r)
		}
	}
	// hot is cached through one follower and pulled again through the
	// other; the leader never sees it locally.
	viaC, viaB := others[0], others[1]
	t.Logf("leader %s; hot cached via %s, pulled again via %s", leader.name, viaC.name, viaB.name)

	pushImage := func(repo string, size int64, seed uint64) {
		img, _ := testenv.RawBlobImage(t, size, seed)
		up.Push(t, repo+":v1", img)
	}
	pushImage("library/hot", layer, 200)
	pushImage("library/pinned", 4*mib, 201)
	heldImg, heldLayer := testenv.RawBlobImage(t, 16*mib, 202)
	up.Push(t, "library/held:v1", heldImg)
	hl, err := heldLayer.Digest()
	if err != nil {
		t.Fatal(err)
	}
	held := digest.Digest(hl.String())
	const images = 11
	for i := range images {
		pushImage(fmt.Sprintf("library/img%d", i), layer, uint64(300+i))
	}

	// Phase 1, under the cap: hot (the oldest), a 16 MiB blob, the pinned
	// image, and seven images spread over the replicas.
	hot := viaC.e.pullImage(t, "library/hot", "v1")
	leader.e.pullImage(t, "library/held", "v1")
	// A slow client of C holds the 16 MiB blob open: in use on C only,
	// and, by its last access, older than the seven images that follow.
	slow := slowGet(t, viaC.e.srv.URL+"/v2/library/held/blobs/"+held.String())
	head := make([]byte, 1024)
	if _, err := io.ReadFull(slow.Body, head); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the held blob in use on C", func() bool { return viaC.e.proxy.InUse(held) })
	time.Sleep(1100 * time.Millisecond) // the shared view keeps whole seconds
	pinned := leader.e.pullImage(t, "library/pinned", "v1")
	if err := leader.e.store.PutPin(ctx, storage.Pin{Name: "base", Updated: time.Now(), Blobs: pinned}); err != nil {
		t.Fatal(err)
	}
	pulled := map[int][]digest.Digest{}
	for i := range 7 {
		pulled[i] = reps[i%3].e.pullImage(t, fmt.Sprintf("library/img%d", i), "v1")
	}
	// Everything so far ages past the grace period; then hot is pulled
	// again on B: recently used, for every replica.
	time.Sleep(grace + 500*time.Millisecond)
	viaB.e.pullImage(t, "library/hot", "v1")

	// Phase 2: four more images at once, through all replicas: 44 MiB,
	// over the cap. The leader evicts the least recently used (the
	// phase-1 images, but neither the held blob nor hot) down to 90% of
	// the cap.
	var wg sync.WaitGroup
	var mu sync.Mutex
	for i := 7; i < images; i++ {
		wg.Go(func() {
			ds := reps[i%3].e.pullImage(t, fmt.Sprintf("library/img%d", i), "v1")
			mu.Lock()
			pulled[i] = ds
			mu.Unlock()
		})
	}
	wg.Wait()
	settled := func(rs []*evictReplica) int64 {
		var used int64
		waitFor(t, "the cluster's usage under the cap and on every replica", func() bool {
			used, _ = rs[0].eng.Usage()
			for _, r := range rs[1:] {
				if u, _ := r.eng.Usage(); u != used {
					return false
				}
			}
			return used <= limit
		})
		return used
	}
	used := settled(reps)
	onDisk := diskUsage(t, leader.e.store)
	by := rec.count()
	t.Logf("cluster usage %d bytes (%.1f MiB), on disk %d; removals by replica %v", used, float64(used)/float64(mib), onDisk, by)
	if onDisk > limit+layer {
		t.Errorf("%d bytes on disk, cap %d (+ one blob)", onDisk, limit)
	}
	if onDisk != used {
		t.Errorf("shared usage %d, bytes on disk %d: the bookkeeping lost commits or evictions", used, onDisk)
	}
	if by[leader.name] == 0 || by[viaB.name]+by[viaC.name] != 0 {
		t.Errorf("removals by replica %v: want only the leader %s", by, leader.name)
	}
	for _, d := range append(append([]digest.Digest{held}, pinned...), hot...) {
		if _, err := leader.e.store.StatBlob(ctx, d); err != nil {
			t.Errorf("pinned, held or recently pulled blob %s evicted: %v", d, err)
		}
	}
	got, n, err := readAllHash(io.MultiReader(bytesReader(head), slow.Body))
	slow.Body.Close()
	if err != nil || got != held || n != 16*mib {
		t.Fatalf("slow client: %d bytes hashing to %s (%v)", n, got, err)
	}
	// Every replica's metrics show the cluster's usage, not its own view.
	for _, r := range reps {
		if got := gaugeValue(t, r.reg, "stowage_cache_bytes"); int64(got) != used {
			t.Errorf("evictReplica %s: stowage_cache_bytes %v, want the cluster's %d", r.name, got, used)
		}
		if local, _ := r.eng.Index().Usage(); r != leader && local == used {
			t.Logf("evictReplica %s: local index %d equals the cluster's (it saw everything?)", r.name, local)
		}
	}

	// Evicted content comes back from the upstream, right.
	evicted := -1
	for i := range images {
		for _, d := range pulled[i][1:] {
			if _, err := leader.e.store.StatBlob(ctx, d); err != nil {
				evicted = i
			}
		}
	}
	if evicted < 0 {
		t.Fatal("nothing was evicted")
	}
	up.ResetCounts()
	viaB.e.pullImage(t, fmt.Sprintf("library/img%d", evicted), "v1")
	if up.Count(testenv.BlobGet) == 0 {
		t.Error("an evicted image pulled without fetching from the upstream")
	}

	// The leader stops (its lease is released): another evictReplica leads and
	// evicts what the next pulls bring over the cap.
	leader.stop()
	next := leaderOf(others)
	before := rec.count()[next.name]
	time.Sleep(grace)
	for i := range images {
		others[i%2].e.pullImage(t, fmt.Sprintf("library/img%d", i), "v1")
	}
	used = settled(others)
	rec.mu.Lock()
	overlap := rec.overlap
	rec.mu.Unlock()
	by = rec.count()
	after := by[next.name]
	t.Logf("after the handover to %s: cluster usage %d, removals by replica %v", next.name, used, by)
	if after == before {
		t.Errorf("the new leader %s evicted nothing", next.name)
	}
	if len(overlap) > 0 {
		t.Errorf("two replicas evicted at once: %v", overlap)
	}
	if onDisk := diskUsage(t, next.e.store); onDisk > limit+layer {
		t.Errorf("%d bytes on disk after the handover, cap %d (+ one blob)", onDisk, limit)
	}

	// The upstream goes away: the pinned image still pulls everywhere.
	up.Close()
	for _, r := range reps {
		r.e.pullImage(t, "library/pinned", "v1")
	}
}

// slowGet starts a GET whose client reads nothing until told to: its
// receive buffer is fixed small (no autotuning), so the server cannot
// finish writing a blob of several MiB into the socket and keeps serving it.
func slowGet(t *testing.T, url string) *http.Response {
	t.Helper()
	d := &net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 64<<10)
		})
		return errors.Join(err, serr)
	}}
	tr := &http.Transport{DialContext: d.DialContext}
	t.Cleanup(tr.CloseIdleConnections)
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	return resp
}

// gaugeValue reads an unlabelled gauge from reg.
func gaugeValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("no gauge %s", name)
	return 0
}
