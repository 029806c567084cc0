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
	takeover      *takeoverMetrics

	diskFullEpisodes prometheus.Counter
	diskFull         prometheus.Gauge
	uncachedServes   *prometheus.CounterVec
	fillDuration     *prometheus.HistogramVec
	upstreamErrors   *prometheus.CounterVec
	integrityChecks  *prometheus.CounterVec
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
	m.addOperational()
	for _, c := range []prometheus.Collector{m.requests, m.aborted, m.hits, m.misses, m.upstreamBytes, m.servedBytes,
		m.fillsInFlight, m.fills, m.staleServes, m.rateLimit,
		m.diskFullEpisodes, m.diskFull, m.uncachedServes, m.fillDuration, m.upstreamErrors, m.integrityChecks} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	mm, err := newManifestMetrics(reg)
	if err != nil {
		return nil, err
	}
	m.manifest = mm
	if m.takeover, err = newTakeoverMetrics(reg); err != nil {
		return nil, err
	}
	return m, nil
}

// ObserveRateLimit records an upstream's rate-limit headers; pass it to the
// upstream client's rate-limit observer option.
func (p *Proxy) ObserveRateLimit(host string, limit, remaining int) {
	p.m.rateLimit.WithLabelValues(host, "limit").Set(float64(limit))
	p.m.rateLimit.WithLabelValues(host, "remaining").Set(float64(remaining))
}

// addOperational creates the collectors an operator running the cache
// unattended watches: disk-full episodes, uncached serves, fill durations,
// upstream errors by class and integrity checks of cache hits.
func (m *metrics) addOperational() {
	m.diskFullEpisodes = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "stowage_disk_full_episodes_total",
		Help: "Times a cache write failed for lack of space (ENOSPC, quota) while caching was on; an episode ends with the next successful commit.",
	})
	m.diskFull = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "stowage_disk_full",
		Help: "1 while a disk-full episode runs (blobs are streamed from the upstream without caching), else 0.",
	})
	m.uncachedServes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "stowage_uncached_blob_serves_total",
		Help: "Blob responses streamed straight from the upstream because the cache could not store them, by outcome (complete, failed).",
	}, []string{"outcome"})
	m.fillDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "stowage_fill_duration_seconds",
		Help:    "Duration of finished blob fills, by outcome (as stowage_fills_total).",
		Buckets: prometheus.ExponentialBuckets(0.05, 2.5, 12), // 50 ms .. 20 min
	}, []string{"outcome"})
	m.upstreamErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "stowage_upstream_errors_total",
		Help: "Failed blob fills and manifest fetches by registry host and class of the failure (not_found, denied, rate_limited, unavailable, invalid, digest_mismatch, storage, other).",
	}, []string{"upstream", "class"})
	m.integrityChecks = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "stowage_integrity_checks_total",
		Help: "Background re-hashes of served cache hits (cache.verify_sample), by result (ok, corrupt, error, skipped).",
	}, []string{"result"})
}
