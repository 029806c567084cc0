package evict

import (
	"bytes"
	"context"
	"slices"
	"sort"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/stowage/stowage/storage"
)

// harness is one engine over a real in-memory store, inside a synctest
// bubble: time only moves when the test sleeps.
type harness struct {
	t      *testing.T
	store  *storage.Store
	eng    *Engine
	blobs  map[string]digest.Digest
	inUse  *inUseSet
	free   uint64
	reg    *prometheus.Registry
	passes []PassResult
	mu     sync.Mutex
}

type inUseSet struct {
	mu sync.Mutex
	m  map[digest.Digest]bool
}

func (s *inUseSet) InUse(d digest.Digest) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.m[d]
}

// step is one event of a scenario.
type step func(h *harness)

// add commits blob name (size bytes) into repo and notifies the engine.
func add(name string, size int, repos ...string) step {
	return func(h *harness) {
		h.t.Helper()
		d := h.commit(name, size, repos...)
		h.eng.Added(d, int64(size))
		synctest.Wait()
	}
}

// manifest stores manifest bytes named name in repo and notifies.
func manifest(name string, size int, repo string) step {
	return func(h *harness) {
		body := bytes.Repeat([]byte(name), size/len(name))
		d := digest.FromBytes(body)
		h.blobs[name] = d
		if err := h.store.PutManifest(context.Background(), repo, d, body); err != nil {
			h.t.Fatal(err)
		}
		h.eng.ManifestAdded(d, int64(len(body)))
		synctest.Wait()
	}
}

func touch(name string) step {
	return func(h *harness) { h.eng.Touched(h.blobs[name]); synctest.Wait() }
}

func sleep(d time.Duration) step {
	return func(h *harness) { time.Sleep(d); synctest.Wait() }
}

func pin(names ...string) step {
	return func(h *harness) {
		p := storage.Pin{Name: "list"}
		for _, n := range names {
			p.Blobs = append(p.Blobs, h.blobs[n])
		}
		if err := h.store.PutPin(context.Background(), p); err != nil {
			h.t.Fatal(err)
		}
	}
}

func use(name string, on bool) step {
	return func(h *harness) {
		h.inUse.mu.Lock()
		h.inUse.m[h.blobs[name]] = on
		h.inUse.mu.Unlock()
	}
}

func setFree(n uint64) step { return func(h *harness) { h.free = n } }

func trigger() step { return func(h *harness) { h.eng.Trigger(); synctest.Wait() } }

// want checks which named blobs are still in the store.
func want(kept ...string) step {
	return func(h *harness) {
		h.t.Helper()
		var got []string
		for name, d := range h.blobs {
			if _, err := h.store.StatBlob(context.Background(), d); err == nil {
				got = append(got, name)
			}
		}
		sort.Strings(got)
		sort.Strings(kept)
		if !slices.Equal(got, kept) {
			h.t.Fatalf("kept %v, want %v", got, kept)
		}
	}
}

// wantUsage checks the index's view.
func wantUsage(bytes int64) step {
	return func(h *harness) {
		h.t.Helper()
		if got, _ := h.eng.Index().Usage(); got != bytes {
			h.t.Fatalf("usage %d, want %d", got, bytes)
		}
	}
}

// wantEvicted checks the metrics.
func wantEvicted(reason string, objects int) step {
	return func(h *harness) {
		h.t.Helper()
		var m dto.Metric
		if err := h.eng.metrics.objects.WithLabelValues(reason).Write(&m); err != nil {
			h.t.Fatal(err)
		}
		if got := m.GetCounter().GetValue(); int(got) != objects {
			h.t.Fatalf("evicted[%s] = %v, want %d", reason, got, objects)
		}
	}
}

// wantLinked checks the _layers link of blob name in repo.
func wantLinked(name, repo string, linked bool) step {
	return func(h *harness) {
		h.t.Helper()
		ok, err := h.store.BlobLinked(context.Background(), repo, h.blobs[name])
		if err != nil || ok != linked {
			h.t.Fatalf("%s linked in %s = %v (%v), want %v", name, repo, ok, err, linked)
		}
	}
}

func (h *harness) commit(name string, size int, repos ...string) digest.Digest {
	h.t.Helper()
	ctx := context.Background()
	body := bytes.Repeat([]byte(name[:1]), size)
	body = append(body[:size-len(name)], name...)
	d := digest.FromBytes(body)
	st, err := h.store.NewStaging(d)
	if err != nil {
		h.t.Fatal(err)
	}
	if _, err := st.File.Write(body); err != nil {
		h.t.Fatal(err)
	}
	if err := h.store.CommitBlob(ctx, d, st); err != nil {
		h.t.Fatal(err)
	}
	for _, r := range repos {
		if err := h.store.LinkBlob(ctx, r, d); err != nil {
			h.t.Fatal(err)
		}
	}
	h.blobs[name] = d
	return d
}

func TestEngineSteps(t *testing.T) {
	t.Parallel()
	const grace = 10 * time.Minute
	tests := []struct {
		name   string
		policy Policy
		steps  []step
	}{
		{
			name:   "over the cap: least recently used first, down to 90% of the cap",
			policy: Policy{MaxSize: 1000, Grace: grace},
			steps: []step{
				add("a", 300), sleep(time.Minute), add("b", 300), sleep(time.Minute),
				add("c", 300), sleep(time.Minute), add("d", 100),
				want("a", "b", "c", "d"), wantUsage(1000),
				sleep(grace), touch("a"),
				// 1300 > 1000: free 1300-900 = 400: b (LRU), then c.
				add("e", 300),
				want("a", "d", "e"), wantUsage(700), wantEvicted(ReasonSize, 2),
			},
		},
		{
			name:   "pinned, in-use and young blobs stay; manifests are never evicted",
			policy: Policy{MaxSize: 1000, Grace: grace},
			steps: []step{
				manifest("m", 100, "lib/app"),
				add("a", 300), add("b", 300), add("c", 200),
				pin("a"), use("b", true),
				sleep(grace + time.Second),
				add("d", 200), // 1100 > 1000; a pinned, b in use, d young: c goes
				want("m", "a", "b", "d"), wantUsage(900),
				add("e", 300), // 1200: need 300; only b (in use) old enough besides pinned a
				want("m", "a", "b", "d", "e"),
				use("b", false), trigger(),
				want("m", "a", "d", "e"), wantEvicted(ReasonSize, 2),
			},
		},
		{
			name:   "young content waits out its grace period, then the periodic pass evicts it",
			policy: Policy{MaxSize: 500, Grace: grace},
			steps: []step{
				add("a", 300), add("b", 300),
				want("a", "b"),
				sleep(grace - 2*time.Minute), want("a", "b"),
				sleep(3 * time.Minute), // the minute ticker runs a pass after the grace period
				want("b"), wantEvicted(ReasonSize, 1),
			},
		},
		{
			name:   "evict_after removes unused content under the cap",
			policy: Policy{EvictAfter: time.Hour, Grace: grace},
			steps: []step{
				add("a", 10), add("b", 10),
				sleep(50 * time.Minute), touch("b"),
				sleep(11 * time.Minute),
				want("b"), wantEvicted(ReasonAge, 1),
				sleep(time.Hour), want(), wantEvicted(ReasonAge, 2),
			},
		},
		{
			name: "free space below min_free evicts until 10% more than min_free is free",
			policy: Policy{Grace: grace, MinFree: func(total uint64) uint64 {
				return total / 10
			}},
			steps: []step{
				add("a", 100), sleep(time.Second), add("b", 100), sleep(time.Second), add("c", 100),
				sleep(grace + time.Second),
				setFree(1000), trigger(), want("a", "b", "c"),
				// floor 1000 of 10000; free 950: free 1100-950 = 150: a and b.
				setFree(950), trigger(),
				want("c"), wantEvicted(ReasonFreeSpace, 2),
			},
		},
		{
			name:   "eviction removes the repositories' links in the same pass",
			policy: Policy{MaxSize: 100, Grace: grace},
			steps: []step{
				add("a", 60, "lib/one", "lib/two"), add("b", 30, "lib/two"),
				sleep(grace + time.Second), touch("b"),
				add("c", 30, "lib/one"),
				want("b", "c"),
				wantLinked("a", "lib/one", false), wantLinked("a", "lib/two", false),
				wantLinked("b", "lib/two", true), wantLinked("c", "lib/one", true),
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			synctest.Test(t, func(t *testing.T) {
				h := newHarness(t, tt.policy)
				for _, s := range tt.steps {
					s(h)
				}
			})
		})
	}
}

func newHarness(t *testing.T, p Policy) *harness {
	t.Helper()
	store, err := storage.NewInMemory()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	h := &harness{t: t, store: store, blobs: map[string]digest.Digest{},
		inUse: &inUseSet{m: map[digest.Digest]bool{}}, free: 1 << 40, reg: prometheus.NewRegistry()}
	opts := []Option{WithInUse(h.inUse), WithRegisterer(h.reg)}
	if p.MinFree != nil {
		opts = append(opts, WithDiskSpace(func() (uint64, uint64, error) { return 10000, h.free, nil }))
	}
	eng, err := New(store, p, opts...)
	if err != nil {
		t.Fatal(err)
	}
	eng.afterPass = func(r PassResult, err error) {
		if err != nil {
			t.Errorf("pass: %v", err)
		}
		h.mu.Lock()
		h.passes = append(h.passes, r)
		h.mu.Unlock()
	}
	h.eng = eng
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- eng.Run(ctx) }()
	synctest.Wait()
	if !eng.Index().IsReady() {
		t.Fatal("index not ready on an empty store")
	}
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return h
}
