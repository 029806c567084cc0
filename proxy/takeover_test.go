package proxy_test

import (
	"net/http"
	"testing"

	"github.com/stowage/stowage/proxy/internal/testenv"
)

// TestDrainingReplicaTakesNoNewLease: a replica that is shutting down
// still streams a fill another replica runs, but starts no download of its
// own: a cold blob nobody fills gets 503 (retry elsewhere) and no upstream
// GET.
func TestDrainingReplicaTakesNoNewLease(t *testing.T) {
	t.Parallel()
	rs := newReplicas(t, 2)
	a, b := rs[0], rs[1]
	const size = 2 << 20
	d, owner, release := heldOwner(t, a, size, 61)
	b.proxy.SetDraining(true)
	follower := startPull(t, b.env, d) // a's fill: streamed, no lease needed
	follower.readN(t, 256<<10)

	cold := b.seedBlob("library/peer:v2", 1<<20, 62)
	before := b.up.Count(testenv.BlobGet)
	resp := b.get(t.Context(), http.MethodGet, "/v2/library/peer/blobs/"+cold.String(), nil)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Errorf("cold blob on a draining replica: %s (Retry-After %q), want 503 with Retry-After", resp.Status, resp.Header.Get("Retry-After"))
	}
	if n := b.up.Count(testenv.BlobGet) - before; n != 0 {
		t.Errorf("a draining replica sent %d upstream blob GETs", n)
	}
	release()
	for _, pl := range []*pull{owner, follower} {
		if n, err := pl.rest(256<<10, size); err != nil {
			t.Errorf("client: %d bytes: %v", n, err)
		}
	}
}
