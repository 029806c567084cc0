package proxy

import (
	"github.com/prometheus/client_golang/prometheus"
)

// takeoverMetrics count the fills this replica took over from an owner
// that died or left (its lease ended without a commit, or it left staged
// bytes behind), and where their bytes came from.
type takeoverMetrics struct {
	// takeovers by source: adopted (the dead owner's staged bytes were
	// adopted), streamed (only bytes streamed from it before were kept),
	// none (the download started again from zero).
	takeovers *prometheus.CounterVec
	// inherited bytes by source: adopted, streamed.
	inherited *prometheus.CounterVec
	// downloaded: upstream bytes of taken-over fills (the rest of the
	// blob, or all of it again).
	downloaded prometheus.Counter
}

// Sources of a takeover's bytes (label values).
const (
	takeoverAdopted  = "adopted"
	takeoverStreamed = "streamed"
	takeoverNone     = "none"
)

func newTakeoverMetrics(reg prometheus.Registerer) (*takeoverMetrics, error) {
	m := &takeoverMetrics{
		takeovers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "stowage_fill_takeovers_total",
			Help: "Blob fills taken over from a replica that died or left without committing, by where the resumed download started: adopted (after the dead owner's staged bytes), streamed (after the bytes streamed from it), none (from zero).",
		}, []string{"source"}),
		inherited: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "stowage_fill_inherited_bytes_total",
			Help: "Bytes taken-over fills kept instead of downloading them again, by source: adopted (read from the dead owner's staging file on the shared filesystem), streamed (streamed from the owner before it went).",
		}, []string{"source"}),
		downloaded: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "stowage_fill_takeover_downloaded_bytes_total",
			Help: "Upstream bytes downloaded by taken-over fills: the rest of the blob after the inherited bytes, or all of it when nothing could be kept.",
		}),
	}
	for _, s := range []string{takeoverAdopted, takeoverStreamed, takeoverNone} {
		m.takeovers.WithLabelValues(s)
	}
	for _, s := range []string{takeoverAdopted, takeoverStreamed} {
		m.inherited.WithLabelValues(s)
	}
	for _, c := range []prometheus.Collector{m.takeovers, m.inherited, m.downloaded} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// note records one takeover that kept streamed and adopted bytes.
func (m *takeoverMetrics) note(streamed, adopted int64) {
	source := takeoverNone
	switch {
	case adopted > 0:
		source = takeoverAdopted
	case streamed > 0:
		source = takeoverStreamed
	}
	m.takeovers.WithLabelValues(source).Inc()
	m.inherited.WithLabelValues(takeoverStreamed).Add(float64(streamed))
	m.inherited.WithLabelValues(takeoverAdopted).Add(float64(adopted))
}
