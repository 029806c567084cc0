package cluster

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/stowage/stowage/storage/evict"
	"github.com/stowage/stowage/storage/evict/lead"
	"github.com/stowage/stowage/storage/usage"
)

func newEvictState(t *testing.T, l *RedisLeases) *RedisEvict {
	t.Helper()
	r, err := NewRedisEvict(l)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestRedisEvictLease(t *testing.T) {
	c := needRedis(t)
	ctx := t.Context()
	prefix := testPrefix(t)
	a := newEvictState(t, newLeases(t, c, prefix, time.Second))
	b := newEvictState(t, newLeases(t, c, prefix, time.Second))
	step := func(r *RedisEvict, ttl time.Duration, want bool) {
		t.Helper()
		got, err := r.Acquire(ctx, ttl)
		if err != nil || got != want {
			t.Fatalf("Acquire = %v, %v; want %v", got, err, want)
		}
	}
	step(a, 10*time.Second, true)
	step(b, 10*time.Second, false)
	step(a, 10*time.Second, true) // its holder extends it
	if id, err := b.LeaseHolder(ctx); err != nil || id != a.l.ID() {
		t.Fatalf("holder %q (%v), want %q", id, err, a.l.ID())
	}
	// b's release does not free a's lease; a's does.
	if err := b.Release(ctx); err != nil {
		t.Fatal(err)
	}
	step(b, 10*time.Second, false)
	if err := a.Release(ctx); err != nil {
		t.Fatal(err)
	}
	step(b, 300*time.Millisecond, true)
	// Not renewed: it expires and a takes it.
	time.Sleep(500 * time.Millisecond)
	step(a, 10*time.Second, true)

	// A request reaches the holder once.
	if err := b.Request(ctx); err != nil {
		t.Fatal(err)
	}
	for i, want := range []bool{true, false} {
		got, err := a.TakeRequest(ctx)
		if err != nil || got != want {
			t.Fatalf("TakeRequest #%d = %v, %v; want %v", i, got, err, want)
		}
	}
}

// TestRedisEvictOneLeaderOfThree runs three Leads on the real Redis: one
// leads; when it stops, another takes over at its next step.
func TestRedisEvictOneLeaderOfThree(t *testing.T) {
	c := needRedis(t)
	prefix := testPrefix(t)
	var leads []*lead.Lead
	var stops []context.CancelFunc
	done := make(chan struct{}, 3)
	for range 3 {
		l, err := lead.New(newEvictState(t, newLeases(t, c, prefix, time.Second)), 3*time.Second, lead.WithInterval(100*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		leads, stops = append(leads, l), append(stops, cancel)
		go func() { _ = l.Run(ctx); done <- struct{}{} }()
	}
	defer func() {
		for _, s := range stops {
			s()
		}
		for range 3 {
			<-done
		}
	}()
	leader := func() (int, int) {
		who, n := -1, 0
		for i, l := range leads {
			if l.Role() == lead.Leader {
				who, n = i, n+1
			}
		}
		return who, n
	}
	first := waitLeader(t, leader)
	stops[first]()
	<-done
	done <- struct{}{} // counted again by the deferred wait
	second := waitLeader(t, leader)
	if second == first {
		t.Fatalf("replica %d still leads after it stopped", first)
	}
}

func waitLeader(t *testing.T, leader func() (int, int)) int {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if who, n := leader(); n == 1 {
			return who
		} else if n > 1 {
			t.Fatalf("%d leaders at once", n)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("no leader within 5s")
	return -1
}

func dg(s string) digest.Digest { return digest.FromString(s) }

func TestRedisEvictUsageIsIdempotent(t *testing.T) {
	c := needRedis(t)
	ctx := t.Context()
	r := newEvictState(t, newLeases(t, c, testPrefix(t), time.Second))
	t0 := time.Unix(1_900_000_000, 0)
	a, b, m := dg("a"), dg("b"), dg("m")
	add := evict.Changes{Added: []usage.Blob{
		{Digest: a, Size: 100, Cached: t0},
		{Digest: b, Size: 200, Cached: t0.Add(time.Minute)},
		{Digest: m, Size: 10, Cached: t0, Manifest: true},
	}}
	wantTotals := func(tot evict.Totals, err error, bytes, objects int64) {
		t.Helper()
		if err != nil || tot.Bytes != bytes || tot.Objects != objects {
			t.Fatalf("totals %+v (%v), want %d bytes, %d objects", tot, err, bytes, objects)
		}
	}
	tot, err := r.Apply(ctx, add)
	wantTotals(tot, err, 310, 3)
	if tot.Seeded {
		t.Fatal("seeded before any reconciliation")
	}
	tot, err = r.Apply(ctx, add) // applied twice (a retried batch): counted once
	wantTotals(tot, err, 310, 3)

	// An access older than the commit does not make a blob older; a later
	// one makes it the most recently used; the manifest is never a
	// candidate.
	tot, err = r.Apply(ctx, evict.Changes{Touched: map[digest.Digest]time.Time{
		a: t0.Add(-time.Hour), b: t0.Add(2 * time.Minute), m: t0.Add(time.Hour),
	}})
	wantTotals(tot, err, 310, 3)
	old, err := r.Oldest(ctx, t0.Add(time.Hour), 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	if got := digestsOf(old); !slices.Equal(got, []digest.Digest{a, b}) || old[0].Size != 100 || !old[1].LastUsed.Equal(t0.Add(2*time.Minute)) {
		t.Fatalf("oldest %+v, want a (100 bytes) then b used at %v", old, t0.Add(2*time.Minute))
	}
	if old, _ := r.Oldest(ctx, t0.Add(90*time.Second), 0, 10); !slices.Equal(digestsOf(old), []digest.Digest{a}) {
		t.Fatalf("oldest until b's commit: %v, want only a", digestsOf(old))
	}
	if old, _ := r.Oldest(ctx, t0.Add(time.Hour), 1, 10); !slices.Equal(digestsOf(old), []digest.Digest{b}) {
		t.Fatalf("oldest from offset 1: %v, want only b", digestsOf(old))
	}

	// Removal: twice counts once; an access to a removed blob does not
	// bring it back.
	for range 2 {
		if err := r.Remove(ctx, a); err != nil {
			t.Fatal(err)
		}
	}
	tot, err = r.Apply(ctx, evict.Changes{Touched: map[digest.Digest]time.Time{a: t0.Add(time.Hour)}})
	wantTotals(tot, err, 210, 2)
	if _, known, err := r.LastUsed(ctx, a); err != nil || known {
		t.Fatalf("a known after its removal (%v)", err)
	}
	if at, known, err := r.LastUsed(ctx, b); err != nil || !known || !at.Equal(t0.Add(2*time.Minute)) {
		t.Fatalf("b last used %v, %v (%v)", at, known, err)
	}

	// The same digest committed as a blob after being stored as a
	// manifest stays a manifest (never evicted); a new size replaces the
	// old one in the totals.
	tot, err = r.Apply(ctx, evict.Changes{Added: []usage.Blob{{Digest: m, Size: 12, Cached: t0}}})
	wantTotals(tot, err, 212, 2)
	if old, _ := r.Oldest(ctx, t0.Add(time.Hour), 0, 10); slices.Contains(digestsOf(old), m) {
		t.Fatal("a manifest became an eviction candidate")
	}
}

func digestsOf(bs []usage.Blob) []digest.Digest {
	var out []digest.Digest
	for _, b := range bs {
		out = append(out, b.Digest)
	}
	return out
}

func TestRedisEvictBatchesLargeChanges(t *testing.T) {
	c := needRedis(t)
	ctx := t.Context()
	r := newEvictState(t, newLeases(t, c, testPrefix(t), time.Second))
	var ch evict.Changes
	ch.Touched = map[digest.Digest]time.Time{}
	now := time.Now()
	for i := range 3000 {
		d := dg(fmt.Sprint(i))
		ch.Added = append(ch.Added, usage.Blob{Digest: d, Size: int64(i), Cached: now})
		ch.Touched[d] = now.Add(time.Minute)
	}
	tot, err := r.Apply(ctx, ch)
	if err != nil || tot.Objects != 3000 || tot.Bytes != 2999*3000/2 {
		t.Fatalf("totals %+v (%v), want 3000 objects of %d bytes", tot, err, 2999*3000/2)
	}
	if at, ok, err := r.LastUsed(ctx, dg("2999")); err != nil || !ok || at.Unix() != now.Add(time.Minute).Unix() {
		t.Fatalf("last use of the last one %v %v %v", at, ok, err)
	}
}

// TestRedisEvictReconcile: what the walk saw is added, what it did not
// see goes when it was cached well before the walk, stays when it was
// committed during it; the totals are recounted and the view is seeded.
// A lost batch unseeds it.
func TestRedisEvictReconcile(t *testing.T) {
	c := needRedis(t)
	ctx := t.Context()
	r := newEvictState(t, newLeases(t, c, testPrefix(t), time.Second))
	started := time.Now()
	gone, during, kept, fresh := dg("gone"), dg("during"), dg("kept"), dg("fresh")
	if _, err := r.Apply(ctx, evict.Changes{Added: []usage.Blob{
		{Digest: gone, Size: 1000, Cached: started.Add(-2 * time.Hour)},
		{Digest: during, Size: 20, Cached: started.Add(time.Second)},
		{Digest: kept, Size: 300, Cached: started.Add(-time.Hour)},
	}}); err != nil {
		t.Fatal(err)
	}
	// Drift the totals, as a lost key would: the recount repairs them.
	if err := c.IncrBy(ctx, r.bytes, 12345).Err(); err != nil {
		t.Fatal(err)
	}
	walk := []usage.Blob{
		{Digest: kept, Size: 300, Cached: started.Add(-time.Hour)},
		{Digest: fresh, Size: 4, Cached: started.Add(-3 * time.Hour)},
	}
	if err := r.Reconcile(ctx, started, walk); err != nil {
		t.Fatal(err)
	}
	tot, err := r.Totals(ctx)
	if err != nil || tot.Bytes != 324 || tot.Objects != 3 || !tot.Seeded {
		t.Fatalf("totals %+v (%v), want 324 bytes, 3 objects, seeded", tot, err)
	}
	old, err := r.Oldest(ctx, started.Add(time.Hour), 0, 10)
	if err != nil || !slices.Equal(digestsOf(old), []digest.Digest{fresh, kept, during}) {
		t.Fatalf("entries %v (%v), want fresh, kept, during", digestsOf(old), err)
	}
	tot, err = r.Apply(ctx, evict.Changes{Lost: true})
	if err != nil || tot.Seeded {
		t.Fatalf("after a lost batch: %+v (%v), want unseeded", tot, err)
	}
}

// TestRedisEvictUnavailable: without Redis every call fails fast with
// ErrUnavailable (the engine then evicts locally), through the breaker.
func TestRedisEvictUnavailable(t *testing.T) {
	t.Parallel()
	c := refusingRedis(t, 200*time.Millisecond)
	r := newEvictState(t, newLeases(t, c, testPrefix(t), time.Second))
	ctx := t.Context()
	start := time.Now()
	if _, err := r.Acquire(ctx, time.Second); !errors.Is(err, ErrUnavailable) {
		t.Errorf("Acquire: %v, want ErrUnavailable", err)
	}
	if _, err := r.Apply(ctx, evict.Changes{Removed: []digest.Digest{dg("x")}}); !errors.Is(err, ErrUnavailable) {
		t.Errorf("Apply: %v, want ErrUnavailable", err)
	}
	if _, err := r.Totals(ctx); !errors.Is(err, ErrUnavailable) {
		t.Errorf("Totals: %v, want ErrUnavailable", err)
	}
	t.Logf("three calls to a closed port took %v", time.Since(start))
}

// TestEvictEngineFallsBackToLocalWithoutRedis: an engine sharing its
// bookkeeping through a Redis that refuses connections evicts over its own
// view, as without a cluster: its role is Local and the cap holds.
func TestEvictEngineFallsBackToLocalWithoutRedis(t *testing.T) {
	t.Parallel()
	c := refusingRedis(t, 100*time.Millisecond)
	leases := newLeases(t, c, testPrefix(t), time.Second, WithBackoff(200*time.Millisecond))
	r := newEvictState(t, leases)
	ld, err := lead.New(r, time.Second, lead.WithInterval(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	store := newMemStore(t)
	eng, err := evict.New(store, evict.Policy{MaxSize: 250},
		evict.WithCluster(ld, r, 50*time.Millisecond), evict.WithIntervals(50*time.Millisecond, time.Minute, time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	runEngine(t, eng)
	<-eng.Index().Ready()
	var ds []digest.Digest
	for i := range 3 {
		d := commitBlob(t, store, []byte(fmt.Sprintf("%0100d", i)))
		eng.Added(d, 100)
		ds = append(ds, d)
		time.Sleep(10 * time.Millisecond) // distinct commit times
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		used, _ := eng.Usage()
		if used <= 250 && eng.Role() == lead.Local {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("usage %d, role %v: want a local pass under the cap", used, eng.Role())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := store.StatBlob(t.Context(), ds[0]); err == nil {
		t.Error("the least recently used blob is still there")
	}
}
