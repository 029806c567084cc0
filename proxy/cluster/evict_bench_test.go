package cluster

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/redis/go-redis/v9"

	"github.com/stowage/stowage/storage/evict"
	"github.com/stowage/stowage/storage/usage"
)

// benchBlobs returns n blobs of distinct digests.
func benchBlobs(n int, cached time.Time) []usage.Blob {
	out := make([]usage.Blob, n)
	for i := range out {
		out[i] = usage.Blob{Digest: digest.FromString(fmt.Sprint("blob ", i)), Size: int64(1000 + i), Cached: cached.Add(time.Duration(i) * time.Second)}
	}
	return out
}

// benchEvict returns a RedisEvict on the real Redis under a fresh prefix.
func benchEvict(b *testing.B, c *redis.Client) *RedisEvict {
	b.Helper()
	l, err := NewRedisLeases(c, "stowage-bench-"+fmt.Sprint(time.Now().UnixNano())+":", time.Second, WithTimeout(5*time.Second))
	if err != nil {
		b.Fatal(err)
	}
	r, err := NewRedisEvict(l)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = c.Del(context.Background(), r.keys...).Err() })
	return r
}

func benchRedis(b *testing.B) *redis.Client {
	b.Helper()
	c := NewRedisClient(realRedis, "", 0, 5*time.Second)
	b.Cleanup(func() { _ = c.Close() })
	if err := c.Ping(b.Context()).Err(); err != nil {
		b.Skipf("redis: %v", err)
	}
	return c
}

// BenchmarkRedisEvictSync: one replica's sync of 5 s of a busy replica
// (100 commits and 1,000 distinct blobs hit) against the real Redis.
func BenchmarkRedisEvictSync(b *testing.B) {
	r := benchEvict(b, benchRedis(b))
	base := benchBlobs(10_000, time.Unix(1_900_000_000, 0))
	if _, err := r.Apply(b.Context(), evict.Changes{Added: base}); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := range b.N {
		ch := evict.Changes{Added: benchBlobs(100, time.Unix(1_900_001_000+int64(i), 0)), Touched: map[digest.Digest]time.Time{}}
		for j := range 1000 {
			ch.Touched[base[(i*1000+j)%len(base)].Digest] = time.Unix(1_900_002_000+int64(i), 0)
		}
		if _, err := r.Apply(b.Context(), ch); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRedisEvictReconcile100k: the leader's reconciliation of a
// cache of 100,000 blobs (seeding, or after a rescan), and then one page of
// eviction candidates.
func BenchmarkRedisEvictReconcile100k(b *testing.B) {
	c := benchRedis(b)
	blobs := benchBlobs(100_000, time.Unix(1_900_000_000, 0))
	for range b.N {
		r := benchEvict(b, c)
		start := time.Now()
		if err := r.Reconcile(b.Context(), time.Unix(1_900_200_000, 0), blobs); err != nil {
			b.Fatal(err)
		}
		took := time.Since(start)
		start = time.Now()
		page, err := r.Oldest(b.Context(), time.Unix(1_900_200_000, 0), 0, 256)
		if err != nil || len(page) != 256 {
			b.Fatalf("page of %d (%v)", len(page), err)
		}
		page0 := time.Since(start)
		start = time.Now()
		if _, err := r.run(b.Context(), recountScript, time.Now().Unix()); err != nil {
			b.Fatal(err)
		}
		b.Logf("reconcile of 100,000 blobs: %v; one page of 256 candidates: %v; the recount alone: %v", took, page0, time.Since(start))
	}
}
