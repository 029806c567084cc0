package usage_test

import (
	"context"
	"errors"
	"maps"
	"math/rand/v2"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stowage/stowage/storage"
	"github.com/stowage/stowage/storage/usage"
)

// clock is a settable time shared by the processes of a test.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)} }

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newPulls(t *testing.T, rec usage.Records, now func() time.Time) *usage.Pulls {
	t.Helper()
	p, err := usage.NewPulls(rec, now)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func load(t *testing.T, rec usage.Records) map[string]usage.PullCount {
	t.Helper()
	got, err := usage.LoadPulls(t.Context(), rec)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// counts drops the times, for comparisons of counts only.
func counts(m map[string]usage.PullCount) map[string]int64 {
	out := map[string]int64{}
	for r, c := range m {
		out[r] = c.Count
	}
	return out
}

// TestPullsPersistAndRestore: counts and last pull times survive a save
// and a restore by another counter (a restart); a save without pulls
// writes nothing.
func TestPullsPersistAndRestore(t *testing.T) {
	t.Parallel()
	s := newFS(t, t.TempDir())
	clk := newClock()
	p := newPulls(t, s, clk.now)
	if err := p.Save(t.Context()); err != nil {
		t.Fatal(err)
	}
	if files, err := s.Records(t.Context(), usage.PullsKind); err != nil || len(files) != 0 {
		t.Fatalf("a save without pulls wrote %d files (%v)", len(files), err)
	}
	for range 3 {
		p.Pulled("docker.io/library/alpine")
	}
	clk.advance(time.Minute)
	p.Pulled("ghcr.io/org/app")
	last := clk.now().Truncate(time.Second)
	if err := p.Save(t.Context()); err != nil {
		t.Fatal(err)
	}
	want := map[string]int64{"docker.io/library/alpine": 3, "ghcr.io/org/app": 1}
	got := load(t, s)
	if !maps.Equal(counts(got), want) || !got["ghcr.io/org/app"].Last.Equal(last) {
		t.Fatalf("loaded %v, want %v and a last pull at %s", got, want, last)
	}
	again := newPulls(t, s, clk.now)
	if err := again.Restore(t.Context()); err != nil {
		t.Fatal(err)
	}
	again.Pulled("ghcr.io/org/app")
	want["ghcr.io/org/app"] = 2
	if c := counts(again.Counts()); !maps.Equal(c, want) {
		t.Fatalf("after a restart: %v, want %v", c, want)
	}
	if c := again.Count("docker.io/library/alpine"); c.Count != 3 {
		t.Fatalf("Count: %+v", c)
	}
}

// TestPullsTwoProcessesMerge: two stores over one directory (two
// replicas) save their own files; a reader sees the sums.
func TestPullsTwoProcessesMerge(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	a, b := newFS(t, root), newFS(t, root)
	clk := newClock()
	pa, pb := newPulls(t, a, clk.now), newPulls(t, b, clk.now)
	for range 5 {
		pa.Pulled("docker.io/library/alpine")
	}
	for range 2 {
		pb.Pulled("docker.io/library/alpine")
		pb.Pulled("quay.io/org/tool")
	}
	if err := errors.Join(pa.Save(t.Context()), pb.Save(t.Context())); err != nil {
		t.Fatal(err)
	}
	want := map[string]int64{"docker.io/library/alpine": 7, "quay.io/org/tool": 2}
	if got := counts(load(t, newFS(t, root))); !maps.Equal(got, want) {
		t.Fatalf("merged %v, want %v", got, want)
	}
}

// failingRecords fails PutRecord while fail is set.
type failingRecords struct {
	*storage.Store
	mu   sync.Mutex
	fail bool
}

func (f *failingRecords) PutRecord(ctx context.Context, kind, name string, data []byte) error {
	f.mu.Lock()
	fail := f.fail
	f.mu.Unlock()
	if fail {
		return errors.New("injected write failure")
	}
	return f.Store.PutRecord(ctx, kind, name, data)
}

// TestPullsFailedSaveKeepsPulls: pulls whose save failed are written by
// the next save, none lost, none twice.
func TestPullsFailedSaveKeepsPulls(t *testing.T) {
	t.Parallel()
	s, err := storage.NewInMemory()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	rec := &failingRecords{Store: s, fail: true}
	p := newPulls(t, rec, newClock().now)
	p.Pulled("docker.io/library/alpine")
	if err := p.Save(t.Context()); err == nil {
		t.Fatal("save succeeded on a failing store")
	}
	p.Pulled("docker.io/library/alpine")
	rec.mu.Lock()
	rec.fail = false
	rec.mu.Unlock()
	if err := p.Save(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := counts(load(t, s)); got["docker.io/library/alpine"] != 2 {
		t.Fatalf("after a failed and a good save: %v, want 2", got)
	}
}

// TestPullsCompactionModel runs three processes on one store for eight
// simulated hours (pulls, saves every minute, restarts, compactions), and
// after every step checks that a reader sees exactly the pulls saved so
// far, and at the end that compaction kept the files few.
func TestPullsCompactionModel(t *testing.T) {
	t.Parallel()
	for _, seed := range []uint64{1, 2, 3} {
		s, err := storage.NewInMemory()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		rng := rand.New(rand.NewPCG(seed, 0)) //nolint:gosec // a test's schedule
		clk := newClock()
		repos := []string{"docker.io/library/alpine", "docker.io/library/nginx", "ghcr.io/org/app"}
		procs := make([]*usage.Pulls, 3)
		for i := range procs {
			procs[i] = newPulls(t, s, clk.now)
		}
		saved := map[string]int64{}            // what the files must hold
		pending := make([]map[string]int64, 3) // counted, not yet saved
		for i := range pending {
			pending[i] = map[string]int64{}
		}
		maxFiles := 0
		for step := range 8 * 60 {
			clk.advance(time.Minute)
			for i, p := range procs {
				for range rng.IntN(3) {
					r := repos[rng.IntN(len(repos))]
					p.Pulled(r)
					pending[i][r]++
				}
				if rng.IntN(500) == 0 { // a crash: what was not saved is lost
					procs[i], pending[i] = newPulls(t, s, clk.now), map[string]int64{}
					if err := procs[i].Restore(t.Context()); err != nil {
						t.Fatal(err)
					}
					if got := counts(procs[i].Counts()); !maps.Equal(got, saved) {
						t.Fatalf("seed %d step %d: restored %v, want %v", seed, step, got, saved)
					}
					continue
				}
				if err := p.Save(t.Context()); err != nil {
					t.Fatal(err)
				}
				for r, n := range pending[i] {
					saved[r] += n
				}
				pending[i] = map[string]int64{}
			}
			if got := counts(load(t, s)); !maps.Equal(got, saved) {
				t.Fatalf("seed %d step %d: loaded %v, want %v", seed, step, got, saved)
			}
			files, err := s.Records(t.Context(), usage.PullsKind)
			if err != nil {
				t.Fatal(err)
			}
			maxFiles = max(maxFiles, len(files))
		}
		// Three savers, each a file a minute: the deltas of the last
		// cutMargin+2*compactEvery (45 min) and two snapshots, at most.
		t.Logf("seed %d: at most %d files", seed, maxFiles)
		if maxFiles > 3*46+3 {
			t.Errorf("seed %d: %d files: compaction does not keep up", seed, maxFiles)
		}
	}
}

// TestPullsRun: Run restores the persisted counts, saves every interval
// and once more when its context ends.
func TestPullsRun(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		s, err := storage.NewInMemory()
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		before := newPulls(t, s, nil)
		before.Pulled("docker.io/library/alpine")
		if err := before.Save(t.Context()); err != nil {
			t.Fatal(err)
		}
		p := newPulls(t, s, nil)
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- p.Run(ctx, time.Minute, func(msg string, err error) { t.Errorf("%s: %v", msg, err) }) }()
		synctest.Wait()
		if c := p.Count("docker.io/library/alpine"); c.Count != 1 {
			t.Fatalf("after the restore: %+v, want 1 pull", c)
		}
		p.Pulled("ghcr.io/org/app")
		time.Sleep(time.Minute)
		synctest.Wait()
		if got := counts(load(t, s)); got["ghcr.io/org/app"] != 1 {
			t.Fatalf("after an interval: %v, want ghcr.io/org/app saved", got)
		}
		p.Pulled("ghcr.io/org/app")
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		want := map[string]int64{"docker.io/library/alpine": 1, "ghcr.io/org/app": 2}
		if got := counts(load(t, s)); !maps.Equal(got, want) {
			t.Fatalf("after Run ended: %v, want %v", got, want)
		}
	})
}

// BenchmarkPulled is the cost a pull adds to a manifest request.
func BenchmarkPulled(b *testing.B) {
	s, err := storage.NewInMemory()
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	p, err := usage.NewPulls(s, nil)
	if err != nil {
		b.Fatal(err)
	}
	repos := []string{"docker.io/library/alpine", "docker.io/library/nginx", "ghcr.io/org/app", "quay.io/org/tool"}
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			p.Pulled(repos[i%len(repos)])
			i++
		}
	})
}
