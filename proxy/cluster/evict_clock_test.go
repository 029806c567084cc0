package cluster

import (
	"slices"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/stowage/stowage/storage/evict"
	"github.com/stowage/stowage/storage/usage"
)

// TestRedisEvictReplicaClocksOff: replicas whose clocks are off by ten
// minutes share one view. A blob that a replica with a slow clock has just
// cached and is serving (its commit and its in-use report, stamped by its
// clock) is not an eviction candidate for a leader past a one-minute
// grace period, whether the leader's clock is right or ten minutes fast,
// and its last use reads as "just now" on the leader's clock; a blob idle
// for an hour still is a candidate. Without the correction, the slow
// replica's blob sat ten minutes in the past (its accesses lost to newer
// scores, ZADD GT) and a fast leader's grace period ended in the future.
func TestRedisEvictReplicaClocksOff(t *testing.T) {
	c := needRedis(t)
	ctx := t.Context()
	leases := newLeases(t, c, testPrefix(t), time.Second)
	clock := func(off time.Duration) func() time.Time {
		return func() time.Time { return time.Now().Add(off) }
	}
	right := newEvictState(t, leases)
	slow := newEvictState(t, leases)
	slow.now = clock(-10 * time.Minute)
	fast := newEvictState(t, leases)
	fast.now = clock(10 * time.Minute)

	idle, served := digest.FromString("idle"), digest.FromString("served")
	hourAgo := right.now().Add(-time.Hour)
	if _, err := right.Apply(ctx, evict.Changes{Added: []usage.Blob{{Digest: idle, Size: 1, Cached: hourAgo, LastUsed: hourAgo}}}); err != nil {
		t.Fatal(err)
	}
	// What the slow replica's engine sends at its sync: the commit, then
	// the blob as in use.
	bNow := slow.now()
	if _, err := slow.Apply(ctx, evict.Changes{Added: []usage.Blob{{Digest: served, Size: 1, Cached: bNow, LastUsed: bNow}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := slow.Apply(ctx, evict.Changes{Touched: map[digest.Digest]time.Time{served: slow.now()}}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		leader *RedisEvict
	}{{"right clock", right}, {"fast clock", fast}} {
		t.Run(tc.name, func(t *testing.T) {
			// The leader's pass starts with a sync (flush).
			if _, err := tc.leader.Totals(ctx); err != nil {
				t.Fatal(err)
			}
			now := tc.leader.now()
			old, err := tc.leader.Oldest(ctx, now.Add(-time.Minute), 0, 10)
			if err != nil {
				t.Fatal(err)
			}
			if got := digestsOf(old); !slices.Equal(got, []digest.Digest{idle}) {
				t.Fatalf("candidates past a 1 m grace period on the leader's clock: %v, want only the idle blob %v (served: %v)", got, idle, served)
			}
			if d := now.Sub(old[0].LastUsed); d < 59*time.Minute || d > 61*time.Minute {
				t.Errorf("the idle blob was last used %v ago on the leader's clock, want an hour", d)
			}
			at, known, err := tc.leader.LastUsed(ctx, served)
			if err != nil || !known {
				t.Fatalf("last use of the served blob: %v %v", known, err)
			}
			if d := now.Sub(at); d < -5*time.Second || d > 30*time.Second {
				t.Fatalf("the served blob was last used %v ago on the leader's clock, want just now", d)
			}
			t.Logf("served blob last used %v ago, idle blob %v ago (leader's clock)", now.Sub(at), now.Sub(old[0].LastUsed))
		})
	}
}
