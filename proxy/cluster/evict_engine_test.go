package cluster

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/redis/go-redis/v9"

	"github.com/stowage/stowage/storage"
	"github.com/stowage/stowage/storage/evict"
	"github.com/stowage/stowage/storage/evict/lead"
)

// countingStore counts one engine's removals.
type countingStore struct {
	*storage.Store
	removed atomic.Int32
}

func (s *countingStore) RemoveBlob(ctx context.Context, d digest.Digest, repos []string) (int, error) {
	s.removed.Add(1)
	return s.Store.RemoveBlob(ctx, d, repos)
}

// TestEvictFollowerTriggerRunsOnTheLeader: two engines on one store and
// the real Redis; the follower runs out of space (Trigger, as a write
// failing with ENOSPC does): it does not evict itself, the leader does,
// within a few lease steps, although its own periodic pass is an hour
// away.
func TestEvictFollowerTriggerRunsOnTheLeader(t *testing.T) {
	c := needRedis(t)
	prefix := testPrefix(t)
	store := newMemStore(t)
	var free atomic.Uint64
	free.Store(1000)
	disk := func() (uint64, uint64, error) { return 1000, free.Load(), nil }
	policy := evict.Policy{MinFree: func(total uint64) uint64 { return total / 10 }}

	type node struct {
		eng   *evict.Engine
		store *countingStore
	}
	start := func() node {
		cs := &countingStore{Store: store}
		eng, _ := startClusterEngine(t, c, prefix, cs, policy, evict.WithDiskSpace(disk))
		return node{eng, cs}
	}
	first := start()
	waitUntil(t, "the first engine to lead", func() bool { return first.eng.Role() == lead.Leader })
	second := start()
	waitUntil(t, "the second engine to follow", func() bool { return second.eng.Role() == lead.Follower })

	// Blobs committed through the follower reach the shared view.
	var ds []digest.Digest
	for i := range 3 {
		d := commitBlob(t, store, []byte(fmt.Sprintf("%0100d", i)))
		second.eng.Added(d, 100)
		ds = append(ds, d)
		time.Sleep(1100 * time.Millisecond) // distinct seconds: a known order
	}
	waitUntil(t, "the cluster's usage on the leader", func() bool { used, _ := first.eng.Usage(); return used == 300 })

	// 80 bytes free of 1000, floor 100: free 110-80 = 30 bytes, the oldest blob.
	free.Store(80)
	second.eng.Trigger()
	waitUntil(t, "the leader's pass", func() bool { return first.store.removed.Load() > 0 })
	if n := second.store.removed.Load(); n != 0 {
		t.Errorf("the follower removed %d blobs itself", n)
	}
	if _, err := store.StatBlob(t.Context(), ds[0]); err == nil {
		t.Error("the least recently used blob is still there")
	}
	for _, d := range ds[1:] {
		if _, err := store.StatBlob(t.Context(), d); err != nil {
			t.Errorf("blob %s evicted beyond the need: %v", d, err)
		}
	}
}

// newMemStore returns an in-memory store closed when the test ends.
func newMemStore(t *testing.T) *storage.Store {
	t.Helper()
	store, err := storage.NewInMemory()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	return store
}

// commitBlob stages body and commits it as a blob of its own digest.
func commitBlob(t *testing.T, store *storage.Store, body []byte) digest.Digest {
	t.Helper()
	d := digest.FromBytes(body)
	st, err := store.NewStaging(d)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.File.Write(body); err != nil {
		t.Fatal(err)
	}
	if err := store.CommitBlob(t.Context(), d, st); err != nil {
		t.Fatal(err)
	}
	return d
}

// runEngine runs eng until the test ends.
func runEngine(t *testing.T, eng *evict.Engine) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = eng.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
}

// startClusterEngine runs an engine over store that shares its bookkeeping
// through the real Redis under prefix (lease TTL 1 s, lead steps of
// 100 ms, periodic passes an hour apart) until the test ends.
func startClusterEngine(t *testing.T, c redis.UniversalClient, prefix string, store evict.Store, p evict.Policy, opts ...evict.Option) (*evict.Engine, *RedisEvict) {
	t.Helper()
	r := newEvictState(t, newLeases(t, c, prefix, time.Second))
	ld, err := lead.New(r, time.Second, lead.WithInterval(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	opts = append(opts, evict.WithCluster(ld, r, 50*time.Millisecond), evict.WithIntervals(time.Hour, time.Hour, time.Hour))
	eng, err := evict.New(store, p, opts...)
	if err != nil {
		t.Fatal(err)
	}
	runEngine(t, eng)
	return eng, r
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestEvictLeaderReseedsAfterRedisLostItsData: the shared usage is gone
// (a Redis restarted without persistence); the leader rebuilds it from the
// storage, and the totals are right again on every replica.
func TestEvictLeaderReseedsAfterRedisLostItsData(t *testing.T) {
	c := needRedis(t)
	prefix := testPrefix(t)
	store := newMemStore(t)
	var keys []string
	start := func() *evict.Engine {
		eng, r := startClusterEngine(t, c, prefix, store, evict.Policy{MaxSize: 1 << 30})
		keys = r.keys
		return eng
	}
	a, b := start(), start()
	var total int64
	for i := range 5 {
		body := []byte(fmt.Sprintf("%0*d", 100*(i+1), i))
		d := commitBlob(t, store, body)
		[]*evict.Engine{a, b}[i%2].Added(d, int64(len(body)))
		total += int64(len(body))
	}
	both := func(want int64) func() bool {
		return func() bool {
			ua, oa := a.Usage()
			ub, ob := b.Usage()
			return ua == want && ub == want && oa == 5 && ob == 5
		}
	}
	waitUntil(t, "the shared usage on both replicas", both(total))
	if err := c.Del(t.Context(), keys...).Err(); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the usage reseeded from the storage", func() bool {
		tot, err := newEvictState(t, newLeases(t, c, prefix, time.Second)).Totals(t.Context())
		return err == nil && tot.Seeded && tot.Bytes == total && tot.Objects == 5
	})
	waitUntil(t, "the reseeded usage on both replicas", both(total))
}

// TestEvictTriggerWithoutRedisEvictsAtOnce: Redis refuses connections and
// a write failed for lack of space (Trigger): the replica cannot ask a
// leader, so it evicts over its own view at once, well before its lease
// TTL (10 s) would make it evict locally by itself.
func TestEvictTriggerWithoutRedisEvictsAtOnce(t *testing.T) {
	t.Parallel()
	c := refusingRedis(t, 100*time.Millisecond)
	r := newEvictState(t, newLeases(t, c, testPrefix(t), time.Second))
	ld, err := lead.New(r, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	store := newMemStore(t)
	var free atomic.Uint64
	free.Store(1000)
	eng, err := evict.New(store, evict.Policy{MinFree: func(total uint64) uint64 { return total / 10 }},
		evict.WithDiskSpace(func() (uint64, uint64, error) { return 1000, free.Load(), nil }),
		evict.WithCluster(ld, r, 50*time.Millisecond), evict.WithIntervals(time.Hour, time.Hour, time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	runEngine(t, eng)
	<-eng.Index().Ready()
	body := []byte("a blob that must go")
	d := commitBlob(t, store, body)
	eng.Added(d, int64(len(body)))
	waitUntil(t, "Redis to be seen as down", func() bool { return ld.Role() == lead.Follower && eng.Role() != lead.Leader })
	free.Store(50)
	start := time.Now()
	eng.Trigger()
	waitUntil(t, "the local pass", func() bool {
		_, err := store.StatBlob(t.Context(), d)
		return err != nil
	})
	t.Logf("evicted %v after the trigger", time.Since(start))
	// Still within the TTL: the pass was the one run on request.
	if r := eng.Role(); r == lead.Local {
		t.Errorf("role %v: the pass was not the one on request", r)
	}
}
