package proxy

import (
	"github.com/prometheus/client_golang/prometheus"
)

// manifestMetrics are the manifest and tag policy's collectors.
type manifestMetrics struct {
	// staleAge observes, per stale serve, how far past its fetch the tag
	// was: the oldest stale serve is its highest non-empty bucket, and an
	// alert on a high quantile catches a tag frozen by a persistent
	// failure before max_stale ends it.
	staleAge *prometheus.HistogramVec
	// storeFailures counts manifests fetched from the upstream that could
	// not be written to storage (a full disk): they were served anyway.
	storeFailures *prometheus.CounterVec
}

func newManifestMetrics(reg prometheus.Registerer) (*manifestMetrics, error) {
	m := &manifestMetrics{
		staleAge: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "stowage_stale_serve_age_seconds",
			Help: "Age (time since the last successful fetch or revalidation) of tags served stale because the upstream failed, by registry host.",
			// 1 minute to 4 weeks.
			Buckets: []float64{60, 300, 900, 3600, 6 * 3600, 86400, 3 * 86400, 7 * 86400, 14 * 86400, 28 * 86400},
		}, []string{"upstream"}),
		storeFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "stowage_manifest_store_failures_total",
			Help: "Manifests or tag records fetched from an upstream that could not be stored (served uncached), by kind (manifest, tag).",
		}, []string{"kind"}),
	}
	for _, c := range []prometheus.Collector{m.staleAge, m.storeFailures} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
