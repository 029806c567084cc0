package upstream

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// budgetMetrics are the link budget's collectors, owned by the Budget.
type budgetMetrics struct {
	bytes       *prometheus.CounterVec
	capacity    *prometheus.GaugeVec
	waited      *prometheus.HistogramVec
	connections *prometheus.GaugeVec
	connCap     *prometheus.GaugeVec
	connWait    *prometheus.HistogramVec
	shared      prometheus.Gauge
}

func newBudgetMetrics(reg prometheus.Registerer) (*budgetMetrics, error) {
	m := &budgetMetrics{
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "stowage_upstream_body_bytes_total",
			Help: "Response body bytes received from upstreams, by upstream, link (forward proxy host:port or direct) and class (client or prefetch).",
		}, []string{"upstream", "link", "class"}),
		capacity: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "stowage_budget_bandwidth_bytes_per_second",
			Help: "Configured cap of each bandwidth budget (link:<proxy> or upstream:<host>). Utilisation: rate(stowage_upstream_body_bytes_total) over this.",
		}, []string{"budget"}),
		waited: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "stowage_budget_wait_seconds",
			Help:    "Time one upstream response body spent waiting for the bandwidth budget, by the class it ended in.",
			Buckets: []float64{0.001, 0.01, 0.05, 0.1, 0.5, 1, 5, 15, 60, 300, 1800},
		}, []string{"class"}),
		connections: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "stowage_upstream_connections_in_use",
			Help: "Upstream requests in progress (from the request's start until its body is closed), by upstream.",
		}, []string{"upstream"}),
		connCap: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "stowage_upstream_connections_limit",
			Help: "Configured cap of concurrent requests, by upstream (absent: no cap).",
		}, []string{"upstream"}),
		connWait: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "stowage_upstream_connection_wait_seconds",
			Help:    "Time a request to a connection-capped upstream waited for a slot, by upstream and class.",
			Buckets: []float64{0.001, 0.01, 0.05, 0.1, 0.5, 1, 5, 15, 60, 300},
		}, []string{"upstream", "class"}),
		shared: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "stowage_budget_shared",
			Help: "1 while the bandwidth budgets are shared through Redis; 0 without Redis, or while this process falls back to its own limits because Redis fails.",
		}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.bytes, m.capacity, m.waited, m.connections, m.connCap, m.connWait, m.shared} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("upstream: budget metrics: %w", err)
		}
	}
	return m, nil
}
