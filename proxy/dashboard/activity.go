package dashboard

import (
	"net/http"
	"sort"
	"time"

	"github.com/stowage/stowage/proxy"
	"github.com/stowage/stowage/proxy/prefetch"
)

// Fill is a fill in flight with its rate and ETA.
type Fill struct {
	proxy.FillInfo
	// Replica is the process downloading it: this one, or the lease
	// owner id of the other replica this one streams it from (Owner).
	Replica string `json:"replica"`
	// Progress is written/size in [0,1], or -1 while the size is unknown.
	Progress float64 `json:"progress"`
	// Rate is the mean download rate since the fill started, bytes/s.
	Rate float64 `json:"rate"`
	// ETASeconds is the time left at that rate, -1 when unknown.
	ETASeconds float64 `json:"eta_seconds"`
}

// StaleServes counts tags served past their TTL for one upstream.
type StaleServes struct {
	Upstream string  `json:"upstream"`
	Total    float64 `json:"total"`
}

// StaleServeSource may also be implemented by a Proxy (*proxy.Proxy
// does): the last tags served stale, newest first.
type StaleServeSource interface {
	RecentStaleServes() []proxy.StaleServe
}

// Activity is GET /api/v1/activity.
type Activity struct {
	Time        time.Time     `json:"time"`
	Fills       []Fill        `json:"fills"`
	StaleServes []StaleServes `json:"stale_serves"`
	// RecentStaleServes are the last tags served stale, newest first
	// (empty when the proxy keeps no list).
	RecentStaleServes []proxy.StaleServe `json:"recent_stale_serves"`
	EvictionsTracked  bool               `json:"evictions_tracked"`
	Evictions         []Eviction         `json:"evictions"`
}

func (d *Dashboard) fillList() []Fill {
	now := d.o.Now()
	infos := d.o.Proxy.Fills()
	out := make([]Fill, 0, len(infos))
	for _, f := range infos {
		v := Fill{FillInfo: f, Replica: d.o.Replica, Progress: -1, ETASeconds: -1}
		if f.Owner != "" {
			v.Replica = f.Owner
		}
		if el := now.Sub(f.Started).Seconds(); el > 0 {
			v.Rate = float64(f.Written) / el
		}
		if f.Size > 0 {
			v.Progress = min(float64(f.Written)/float64(f.Size), 1)
			if v.Rate > 0 {
				v.ETASeconds = float64(f.Size-f.Written) / v.Rate
			}
		}
		out = append(out, v)
	}
	return out
}

func (d *Dashboard) activity(w http.ResponseWriter, _ *http.Request) {
	c, err := d.gather()
	if err != nil {
		d.o.Logger.Warn("dashboard: gathering metrics", "err", err)
	}
	a := Activity{Time: d.o.Now(), Fills: d.fillList(), StaleServes: []StaleServes{},
		RecentStaleServes: []proxy.StaleServe{}, Evictions: []Eviction{}}
	if ss, ok := d.o.Proxy.(StaleServeSource); ok {
		if l := ss.RecentStaleServes(); l != nil {
			a.RecentStaleServes = l
		}
	}
	for host, n := range c.stale {
		a.StaleServes = append(a.StaleServes, StaleServes{Upstream: host, Total: n})
	}
	sort.Slice(a.StaleServes, func(i, j int) bool { return a.StaleServes[i].Upstream < a.StaleServes[j].Upstream })
	if es, ok := d.usageSource().(EvictionSource); ok {
		a.EvictionsTracked = true
		if ev := es.RecentEvictions(); ev != nil {
			a.Evictions = ev
		}
	}
	writeJSON(w, http.StatusOK, a)
}

// fills answers GET /api/v1/fills as the admin API does (a JSON array of
// FillInfo), so a read-only dashboard can show it too.
func (d *Dashboard) fills(w http.ResponseWriter, _ *http.Request) {
	f := d.o.Proxy.Fills()
	if f == nil {
		f = []proxy.FillInfo{}
	}
	writeJSON(w, http.StatusOK, f)
}

func (d *Dashboard) prefetchList(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, prefetch.ListAnswer(d.o.Jobs))
}

func (d *Dashboard) prefetchGet(w http.ResponseWriter, r *http.Request) {
	j, ok, err := d.o.Jobs.Lookup(r.PathValue("id"))
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	if !ok {
		writeError(w, http.StatusNotFound, "no such job")
		return
	}
	writeJSON(w, http.StatusOK, j)
}

var _ StaleServeSource = (*proxy.Proxy)(nil)
