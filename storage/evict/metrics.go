package evict

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the engine's collectors, registered on the Registerer given
// WithRegisterer (none otherwise; the counters still count).
type metrics struct {
	reg     prometheus.Registerer
	bytes   *prometheus.CounterVec
	objects *prometheus.CounterVec
}

func (m *metrics) register(e *Engine) error {
	m.bytes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "stowage_cache_evicted_bytes_total",
		Help: "Bytes of blobs evicted from the cache, by reason (size, free_space, age).",
	}, []string{"reason"})
	m.objects = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "stowage_cache_evicted_objects_total",
		Help: "Blobs evicted from the cache, by reason (size, free_space, age).",
	}, []string{"reason"})
	for _, r := range []string{ReasonSize, ReasonFreeSpace, ReasonAge} {
		m.bytes.WithLabelValues(r)
		m.objects.WithLabelValues(r)
	}
	if m.reg == nil {
		return nil
	}
	cs := []prometheus.Collector{
		m.bytes, m.objects,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "stowage_cache_bytes",
			Help: "Bytes of blobs and manifests in the cache, per the usage index (the cluster's shared one with Redis).",
		}, func() float64 { b, _ := e.Usage(); return float64(b) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "stowage_cache_objects",
			Help: "Blobs and manifests in the cache, per the usage index (the cluster's shared one with Redis).",
		}, func() float64 { _, n := e.Usage(); return float64(n) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "stowage_cache_capacity_bytes",
			Help: "The configured cap on cache bytes (cache.max_size); 0 = none.",
		}, func() float64 { return float64(e.policy.MaxSize) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "stowage_cache_index_ready",
			Help: "Whether the usage index has been built from the disk (1) or not yet (0).",
		}, func() float64 {
			if e.index.IsReady() {
				return 1
			}
			return 0
		}),
	}
	if e.lead != nil {
		cs = append(cs, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "stowage_eviction_role",
			Help: "This replica's part in the cluster's eviction: 0 follower (another replica evicts), 1 leader (holds the eviction lease), 2 local (Redis unavailable: evicts over its own view).",
		}, func() float64 { return float64(e.lead.Role()) }))
	}
	if e.disk != nil {
		cs = append(cs, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "stowage_cache_filesystem_free_bytes",
			Help: "Free bytes on the cache's filesystem.",
		}, func() float64 {
			_, free, err := e.disk()
			if err != nil {
				return 0
			}
			return float64(free)
		}))
	}
	for _, c := range cs {
		if err := m.reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}

func (m *metrics) evicted(reason string, size int64) {
	m.bytes.WithLabelValues(reason).Add(float64(size))
	m.objects.WithLabelValues(reason).Inc()
}
