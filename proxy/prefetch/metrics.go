package prefetch

import "github.com/prometheus/client_golang/prometheus"

// metrics are the engine's collectors, registered on the injected
// Registerer.
type metrics struct {
	images *prometheus.CounterVec
	bytes  *prometheus.CounterVec
	runs   prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		images: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "stowage_prefetch_images_total",
			Help: "Images handled by prefetch runs, by outcome (done, failed).",
		}, []string{"outcome"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "stowage_prefetch_bytes_total",
			Help: "Blob bytes ensured by prefetch runs, by source (upstream, cache).",
		}, []string{"source"}),
		runs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "stowage_prefetch_runs_total",
			Help: "Prefetch runs started.",
		}),
	}
	for _, c := range []prometheus.Collector{m.images, m.bytes, m.runs} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
