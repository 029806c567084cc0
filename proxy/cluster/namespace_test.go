package cluster

import (
	"testing"
	"time"
)

// TestNamespacedLeases: leases of two caches (two namespaces) on one Redis
// are independent, and LeaseOwner (peer streaming's look-up of the owner)
// reads the lease under its own namespace.
func TestNamespacedLeases(t *testing.T) {
	c := needRedis(t)
	one, other := testPrefix(t), testPrefix(t)
	a := newLeases(t, c, one, 2*time.Second)
	if err := a.Advertise("http://10.0.0.1:5001"); err != nil {
		t.Fatal(err)
	}
	b := newLeases(t, c, one, 2*time.Second)
	x := newLeases(t, c, other, 2*time.Second)
	ctx := t.Context()
	rel, ok, err := a.TryAcquire(ctx, "fill:sha256:aa")
	if err != nil || !ok {
		t.Fatalf("TryAcquire: %v %v", ok, err)
	}
	defer rel()
	if id, url, err := b.LeaseOwner(ctx, "fill:sha256:aa"); err != nil || id != a.ID() || url != "http://10.0.0.1:5001" {
		t.Errorf("same namespace: LeaseOwner = %q %q %v; want %q and the advertised URL", id, url, err, a.ID())
	}
	if id, _, err := x.LeaseOwner(ctx, "fill:sha256:aa"); err != nil || id != "" {
		t.Errorf("other namespace: LeaseOwner = %q %v; want nobody", id, err)
	}
	relx, ok, err := x.TryAcquire(ctx, "fill:sha256:aa")
	if err != nil || !ok {
		t.Fatalf("other namespace: TryAcquire = %v %v; want its own lease", ok, err)
	}
	relx()
	if _, ok, _ := b.TryAcquire(ctx, "fill:sha256:aa"); ok {
		t.Error("same namespace: a second holder")
	}
}
