package dashboard

import (
	"context"
	"net/http"
	"sync"
	"time"
)

// Ranges of the plots: the last hour at the sample interval, the last day
// at dayStep.
const (
	hourSpan = time.Hour
	daySpan  = 24 * time.Hour
	dayStep  = 5 * time.Minute
)

// sample is the cumulative counters at one time.
type sample struct {
	T        time.Time
	Hits     float64
	Misses   float64
	Served   float64
	Upstream float64
}

// ring keeps the last n samples.
type ring struct {
	buf  []sample
	next int
	full bool
}

func newRing(n int) *ring { return &ring{buf: make([]sample, n)} }

func (r *ring) add(s sample) {
	r.buf[r.next] = s
	r.next = (r.next + 1) % len(r.buf)
	if r.next == 0 {
		r.full = true
	}
}

// all returns the samples oldest first.
func (r *ring) all() []sample {
	if !r.full {
		return append([]sample(nil), r.buf[:r.next]...)
	}
	return append(append([]sample(nil), r.buf[r.next:]...), r.buf[:r.next]...)
}

// last returns the newest sample.
func (r *ring) last() (sample, bool) {
	if !r.full && r.next == 0 {
		return sample{}, false
	}
	return r.buf[(r.next+len(r.buf)-1)%len(r.buf)], true
}

// sampler holds two rings: every interval for the last hour, every dayStep
// for the last day. Samples are cumulative; the API returns differences.
type sampler struct {
	interval time.Duration
	mu       sync.Mutex
	hour     *ring
	day      *ring
}

func newSampler(interval time.Duration) *sampler {
	n := int(hourSpan/interval) + 1
	return &sampler{interval: interval, hour: newRing(min(max(n, 2), 100_000)), day: newRing(int(daySpan/dayStep) + 1)}
}

func (s *sampler) add(x sample) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hour.add(x)
	if last, ok := s.day.last(); !ok || x.T.Sub(last.T) >= dayStep {
		s.day.add(x)
	}
}

// sample takes one sample now.
func (d *Dashboard) sample() {
	c, err := d.gather()
	if err != nil {
		d.o.Logger.Warn("dashboard: gathering metrics", "err", err)
	}
	d.samples.add(sample{T: d.o.Now(), Hits: c.Hits, Misses: c.Misses, Served: c.Served, Upstream: c.Upstream})
}

func (d *Dashboard) runSampler(ctx context.Context) {
	defer close(d.done)
	t := time.NewTicker(d.o.SampleInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			d.sample()
		}
	}
}

// Point is one step of a plot: what happened between the previous sample
// and T.
type Point struct {
	T             time.Time `json:"t"`
	Hits          float64   `json:"hits"`
	Misses        float64   `json:"misses"`
	HitRatio      float64   `json:"hit_ratio"` // -1: no request in the step
	ServedBytes   float64   `json:"served_bytes"`
	UpstreamBytes float64   `json:"upstream_bytes"`
}

// Stats is GET /api/v1/stats.
type Stats struct {
	Range    string  `json:"range"`
	StepSecs float64 `json:"step_seconds"`
	Points   []Point `json:"points"`
}

func deltas(samples []sample) []Point {
	out := make([]Point, 0, len(samples))
	for i := 1; i < len(samples); i++ {
		a, b := samples[i-1], samples[i]
		p := Point{T: b.T, Hits: nonNeg(b.Hits - a.Hits), Misses: nonNeg(b.Misses - a.Misses),
			ServedBytes: nonNeg(b.Served - a.Served), UpstreamBytes: nonNeg(b.Upstream - a.Upstream)}
		p.HitRatio = ratio(p.Hits, p.Misses)
		out = append(out, p)
	}
	return out
}

func nonNeg(f float64) float64 { return max(f, 0) }

func (d *Dashboard) stats(w http.ResponseWriter, r *http.Request) {
	rng := r.URL.Query().Get("range")
	s := d.samples
	s.mu.Lock()
	var st Stats
	switch rng {
	case "", "hour":
		st = Stats{Range: "hour", StepSecs: s.interval.Seconds(), Points: deltas(s.hour.all())}
	case "day":
		st = Stats{Range: "day", StepSecs: dayStep.Seconds(), Points: deltas(s.day.all())}
	default:
		s.mu.Unlock()
		writeError(w, http.StatusBadRequest, `range: want "hour" or "day"`)
		return
	}
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, st)
}
