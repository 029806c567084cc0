package dashboard

import (
	"net/http"
	"sort"
	"syscall"
	"time"

	"github.com/stowage/stowage/proxy"
)

// Usage is the cache's size. Tracked is false without a usage index: only
// the filesystem's numbers are known then.
type Usage struct {
	Tracked bool `json:"tracked"`
	// Indexing is true while the usage index is still being built.
	Indexing bool  `json:"indexing,omitempty"`
	Used     int64 `json:"used_bytes,omitempty"`
	Cap      int64 `json:"cap_bytes,omitempty"` // 0: no cap
	Objects  int   `json:"objects,omitempty"`
	FSTotal  int64 `json:"fs_total_bytes,omitempty"`
	FSFree   int64 `json:"fs_free_bytes,omitempty"`
}

// Traffic is the proxy's traffic since it started.
type Traffic struct {
	Hits          float64 `json:"hits"`
	Misses        float64 `json:"misses"`
	HitRatio      float64 `json:"hit_ratio"` // -1: no request yet
	BlobHits      float64 `json:"blob_hits"`
	BlobMisses    float64 `json:"blob_misses"`
	ServedBytes   float64 `json:"served_bytes"`
	UpstreamBytes float64 `json:"upstream_bytes"`
	SavedBytes    float64 `json:"saved_bytes"` // served minus fetched, at least 0
	StaleServes   float64 `json:"stale_serves"`
	FailedFills   float64 `json:"failed_fills"`
}

// Upstream is one upstream registry on the overview.
type Upstream struct {
	proxy.UpstreamState
	// State is "healthy" or "down".
	State         string     `json:"state"`
	RateLimit     *RateLimit `json:"rate_limit,omitempty"`
	UpstreamBytes float64    `json:"upstream_bytes"`
	StaleServes   float64    `json:"stale_serves"`
}

// Overview is GET /api/v1/overview.
type Overview struct {
	Time          time.Time  `json:"time"`
	Started       time.Time  `json:"started"`
	Replica       string     `json:"replica"`
	Version       string     `json:"version,omitempty"`
	Usage         Usage      `json:"usage"`
	Traffic       Traffic    `json:"traffic"`
	FillsInFlight int        `json:"fills_in_flight"`
	Upstreams     []Upstream `json:"upstreams"`
}

// usage asks the usage index, else the filesystem under the store's root.
func (d *Dashboard) usage() Usage {
	var u Usage
	if src := d.usageSource(); src != nil {
		if r, ok := src.(interface{ IsReady() bool }); !ok || r.IsReady() {
			used, capacity, total, free, objects := src.Usage()
			return Usage{Tracked: true, Used: used, Cap: capacity, Objects: objects, FSTotal: total, FSFree: free}
		}
		u.Indexing = true
	}
	if root := d.o.Store.Root(); root != "" {
		var st syscall.Statfs_t
		if err := syscall.Statfs(root, &st); err == nil {
			u.FSTotal = int64(st.Blocks) * st.Bsize //nolint:gosec // block counts fit
			u.FSFree = int64(st.Bavail) * st.Bsize  //nolint:gosec // block counts fit
		}
	}
	return u
}

func (d *Dashboard) upstreamList(c counters) []Upstream {
	states := d.o.Proxy.UpstreamStates()
	out := make([]Upstream, 0, len(states))
	for _, s := range states {
		u := Upstream{UpstreamState: s, State: "healthy", RateLimit: c.rateLimit[s.Host],
			UpstreamBytes: c.upstreamBytes[s.Host], StaleServes: c.stale[s.Host]}
		if s.Down {
			u.State = "down"
		}
		out = append(out, u)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Down && !out[j].Down })
	return out
}

func traffic(c counters) Traffic {
	return Traffic{Hits: c.Hits, Misses: c.Misses, HitRatio: ratio(c.Hits, c.Misses),
		BlobHits: c.BlobHits, BlobMisses: c.BlobMisses, ServedBytes: c.Served, UpstreamBytes: c.Upstream,
		SavedBytes: nonNeg(c.Served - c.Upstream), StaleServes: c.Stale, FailedFills: c.FillsFailed}
}

func (d *Dashboard) overview(w http.ResponseWriter, _ *http.Request) {
	c, err := d.gather()
	if err != nil {
		d.o.Logger.Warn("dashboard: gathering metrics", "err", err)
	}
	writeJSON(w, http.StatusOK, Overview{
		Time: d.o.Now(), Started: d.started, Replica: d.o.Replica, Version: d.o.Version,
		Usage: d.usage(), Traffic: traffic(c), FillsInFlight: len(d.o.Proxy.Fills()), Upstreams: d.upstreamList(c),
	})
}

func (d *Dashboard) upstreams(w http.ResponseWriter, _ *http.Request) {
	c, err := d.gather()
	if err != nil {
		d.o.Logger.Warn("dashboard: gathering metrics", "err", err)
	}
	writeJSON(w, http.StatusOK, map[string]any{"upstreams": d.upstreamList(c)})
}
