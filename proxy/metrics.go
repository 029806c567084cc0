package proxy

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the proxy's Prometheus collectors, owned by the instance and
// registered on the injected Registerer.
type metrics struct {
	requests      *prometheus.CounterVec
	aborted       *prometheus.CounterVec
	hits          *prometheus.CounterVec
	misses        *prometheus.CounterVec
	upstreamBytes *prometheus.CounterVec
	servedBytes   *prometheus.CounterVec
	fillsInFlight prometheus.Gauge
	fills         *prometheus.CounterVec
	staleServes   *prometheus.CounterVec
	rateLimit     *prometheus.GaugeVec
	manifest      *manifestMetrics
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "stowage_http_requests_total",
			Help: "Registry API requests by route, method and status code.",
		}, []string{"route", "method", "code"}),
		aborted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "stowage_http_requests_aborted_total",
			Help: "Requests whose response was cut short (the connection closed mid-answer), by route and method; also counted in stowage_http_requests_total.",
		}, []string{"route", "method"}),
		hits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "stowage_cache_hits_total",
			Help: "Requests answered from the cache, by kind (manifest, tag, blob).",
		}, []string{"kind"}),
		misses: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "stowage_cache_misses_total",
			Help: "Requests that needed the upstream, by kind (manifest, tag, blob).",
		}, []string{"kind"}),
		upstreamBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "stowage_upstream_bytes_total",
			Help: "Blob bytes downloaded from upstreams, by registry host.",
		}, []string{"upstream"}),
		servedBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "stowage_served_bytes_total",
			Help: "Response body bytes sent to clients, by route.",
		}, []string{"route"}),
		fillsInFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "stowage_fills_in_flight",
			Help: "Blob downloads from upstreams currently running.",
		}),
		fills: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "stowage_fills_total",
			Help: "Finished blob fills by outcome (committed, cached: already committed by another process, failed, abandoned, cancelled).",
		}, []string{"outcome"}),
		staleServes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "stowage_stale_serves_total",
			Help: "Tag manifests served past their TTL because the upstream failed, by registry host.",
		}, []string{"upstream"}),
		rateLimit: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "stowage_upstream_ratelimit",
			Help: "Docker Hub style rate-limit headers seen last, by registry host and kind (limit, remaining).",
		}, []string{"upstream", "kind"}),
	}
	for _, c := range []prometheus.Collector{m.requests, m.aborted, m.hits, m.misses, m.upstreamBytes, m.servedBytes,
		m.fillsInFlight, m.fills, m.staleServes, m.rateLimit} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	mm, err := newManifestMetrics(reg)
	if err != nil {
		return nil, err
	}
	m.manifest = mm
	return m, nil
}

// ObserveRateLimit records an upstream's rate-limit headers; pass it to the
// upstream client's rate-limit observer option.
func (p *Proxy) ObserveRateLimit(host string, limit, remaining int) {
	p.m.rateLimit.WithLabelValues(host, "limit").Set(float64(limit))
	p.m.rateLimit.WithLabelValues(host, "remaining").Set(float64(remaining))
}
