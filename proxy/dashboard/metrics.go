package dashboard

import (
	dto "github.com/prometheus/client_model/go"
)

// counters are the proxy's traffic counters at one moment, read from its
// Prometheus registry (the dashboard adds no metrics of its own).
type counters struct {
	Hits, Misses         float64
	BlobHits, BlobMisses float64
	Served, Upstream     float64 // bytes sent to clients; blob bytes fetched upstream
	Stale                float64
	FillsFailed          float64

	upstreamBytes map[string]float64
	stale         map[string]float64
	rateLimit     map[string]*RateLimit
}

// RateLimit is the last Docker Hub style rate-limit header seen from an
// upstream.
type RateLimit struct {
	Limit     int64 `json:"limit"`
	Remaining int64 `json:"remaining"`
}

// The proxy's metric names (proxy/metrics.go).
const (
	metricHits      = "stowage_cache_hits_total"
	metricMisses    = "stowage_cache_misses_total"
	metricServed    = "stowage_served_bytes_total"
	metricUpstream  = "stowage_upstream_bytes_total"
	metricStale     = "stowage_stale_serves_total"
	metricRateLimit = "stowage_upstream_ratelimit"
	metricFills     = "stowage_fills_total"
)

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

func value(m *dto.Metric) float64 {
	switch {
	case m.GetCounter() != nil:
		return m.GetCounter().GetValue()
	case m.GetGauge() != nil:
		return m.GetGauge().GetValue()
	}
	return 0
}

// gather reads the counters. A failing Gather still returns what it could
// read (the registry reports partial results with the error).
func (d *Dashboard) gather() (counters, error) {
	c := counters{upstreamBytes: map[string]float64{}, stale: map[string]float64{}, rateLimit: map[string]*RateLimit{}}
	fams, err := d.o.Gatherer.Gather()
	for _, f := range fams {
		for _, m := range f.GetMetric() {
			v := value(m)
			switch f.GetName() {
			case metricHits:
				c.Hits += v
				if label(m, "kind") == "blob" {
					c.BlobHits += v
				}
			case metricMisses:
				c.Misses += v
				if label(m, "kind") == "blob" {
					c.BlobMisses += v
				}
			case metricServed:
				if r := label(m, "route"); r != "healthz" && r != "metrics" {
					c.Served += v
				}
			case metricUpstream:
				c.Upstream += v
				c.upstreamBytes[label(m, "upstream")] += v
			case metricStale:
				c.Stale += v
				c.stale[label(m, "upstream")] += v
			case metricFills:
				if label(m, "outcome") == "failed" {
					c.FillsFailed += v
				}
			case metricRateLimit:
				host := label(m, "upstream")
				rl := c.rateLimit[host]
				if rl == nil {
					rl = &RateLimit{}
					c.rateLimit[host] = rl
				}
				if label(m, "kind") == "limit" {
					rl.Limit = int64(v)
				} else {
					rl.Remaining = int64(v)
				}
			}
		}
	}
	return c, err
}

// ratio is hits/(hits+misses), or -1 with no request yet.
func ratio(hits, misses float64) float64 {
	if hits+misses == 0 {
		return -1
	}
	return hits / (hits + misses)
}
