package proxy_test

import (
	"testing"

	"github.com/stowage/stowage/proxy/internal/testenv"
)

// TestPeerFillShowsOwner: a replica streaming another replica's fill
// lists it with the owner's lease id; the owner lists its own download
// without one.
func TestPeerFillShowsOwner(t *testing.T) {
	t.Parallel()
	rs := newReplicas(t, 2)
	a, b := rs[0], rs[1]
	const size = 2 << 20
	d := a.seedBlob("library/peer:v1", size, 47)
	release := make(chan struct{})
	a.up.SetFault(testenv.StallBlobs(512<<10, release))
	owner := startPull(t, a.env, d)
	owner.readN(t, 256<<10)
	waiter := startPull(t, b.env, d)
	waiter.readN(t, 256<<10) // streamed from a: the upstream is held

	fa, fb := a.proxy.Fills(), b.proxy.Fills()
	if len(fa) != 1 || fa[0].Owner != "" {
		t.Errorf("owner's fills: %+v", fa)
	}
	if len(fb) != 1 || fb[0].Digest != d || fb[0].Owner != a.leases.ID() {
		t.Errorf("follower's fills: %+v, want owner %s", fb, a.leases.ID())
	}
	close(release)
	for _, pl := range []*pull{owner, waiter} {
		if n, err := pl.rest(256<<10, size); err != nil {
			t.Errorf("client: %d bytes: %v", n, err)
		}
	}
}
