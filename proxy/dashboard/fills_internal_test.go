package dashboard

import (
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/stowage/stowage/proxy"
)

// listedFills stands in for the proxy's fill registry (a fill following
// another replica needs a cluster: proxy's TestPeerFillShowsOwner).
type listedFills []proxy.FillInfo

func (l listedFills) Fills() []proxy.FillInfo             { return l }
func (listedFills) UpstreamStates() []proxy.UpstreamState { return nil }

// TestFillListReplica: a fill this process downloads names it; one
// streamed from another replica names that replica's lease owner id.
func TestFillListReplica(t *testing.T) {
	t.Parallel()
	now := time.Unix(1000, 0)
	d := &Dashboard{o: Options{Replica: "stowage-0", Now: func() time.Time { return now }, Proxy: listedFills{
		{Digest: digest.FromString("own"), Size: 100, Written: 50, Started: now.Add(-time.Second)},
		{Digest: digest.FromString("peer"), Size: 100, Written: 25, Started: now.Add(-time.Second), Owner: "9f2c"},
	}}}
	got := d.fillList()
	if len(got) != 2 || got[0].Replica != "stowage-0" || got[1].Replica != "9f2c" || got[1].Owner != "9f2c" {
		t.Fatalf("fills: %+v", got)
	}
	if got[1].Progress != 0.25 || got[1].Rate != 25 || got[1].ETASeconds != 3 {
		t.Errorf("peer fill numbers: %+v", got[1])
	}
}
