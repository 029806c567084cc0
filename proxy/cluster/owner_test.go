package cluster

import (
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/stowage/stowage/proxy/internal/testenv"
)

// testLeases returns two replicas' leases on the real Redis under a fresh
// prefix (CI fails without Redis; elsewhere the test is skipped).
func testLeases(t *testing.T, ttl time.Duration) (*RedisLeases, *RedisLeases, redis.UniversalClient) {
	t.Helper()
	c, prefix := testenv.Redis(t)
	a, err := NewRedisLeases(c, prefix, ttl)
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewRedisLeases(c, prefix, ttl)
	if err != nil {
		t.Fatal(err)
	}
	return a, b, c
}

func TestAdvertiseValidates(t *testing.T) {
	t.Parallel()
	l := &RedisLeases{owner: "abc"}
	for _, bad := range []string{"", "10.0.0.1:5001", "ftp://x:1", "http://", "http://a b:1"} {
		if err := l.Advertise(bad); err == nil {
			t.Errorf("Advertise(%q) accepted", bad)
		}
	}
	if err := l.Advertise("http://10.0.0.1:5001"); err != nil || l.owner != "abc http://10.0.0.1:5001" || l.ID() != "abc" {
		t.Fatalf("owner %q, id %q, err %v", l.owner, l.ID(), err)
	}
	if err := l.Advertise("https://peer.example:5001"); err != nil || l.owner != "abc https://peer.example:5001" {
		t.Fatalf("re-advertise: owner %q, err %v", l.owner, err)
	}
}

// TestLeaseOwner: the holder's id and advertised URL are readable by the
// other replicas while the lease is held and renewed, and gone after its
// release; renewal and release still recognise the holder.
func TestLeaseOwner(t *testing.T) {
	t.Parallel()
	a, b, _ := testLeases(t, 600*time.Millisecond)
	if err := a.Advertise("http://10.0.0.1:5001"); err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	if id, url, err := b.LeaseOwner(ctx, "fill:x"); err != nil || id != "" || url != "" {
		t.Fatalf("before: %q %q %v", id, url, err)
	}
	release, ok, err := a.TryAcquire(ctx, "fill:x")
	if err != nil || !ok {
		t.Fatalf("acquire: %v %v", ok, err)
	}
	// Past the TTL: held only because the renewal matched the value.
	time.Sleep(900 * time.Millisecond)
	id, url, err := b.LeaseOwner(ctx, "fill:x")
	if err != nil || id != a.ID() || url != "http://10.0.0.1:5001" {
		t.Fatalf("while held: %q %q %v (a is %q)", id, url, err, a.ID())
	}
	if _, ok, _ := b.TryAcquire(ctx, "fill:x"); ok {
		t.Fatal("b acquired a held lease")
	}
	release()
	if id, url, err := b.LeaseOwner(ctx, "fill:x"); err != nil || id != "" || url != "" {
		t.Fatalf("after release: %q %q %v", id, url, err)
	}
	// A holder that advertises nothing.
	rel, ok, err := b.TryAcquire(ctx, "fill:x")
	if err != nil || !ok {
		t.Fatalf("b acquire: %v %v", ok, err)
	}
	defer rel()
	if id, url, err := a.LeaseOwner(ctx, "fill:x"); err != nil || id != b.ID() || url != "" {
		t.Fatalf("b holds: %q %q %v", id, url, err)
	}
}
