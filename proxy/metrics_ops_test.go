package proxy_test

import (
	"context"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/stowage/stowage/proxy"
	"github.com/stowage/stowage/storage/evict"
)

// newEvictEnv is a proxy whose cache is capped by a real eviction engine,
// wired as "proxy serve" wires it (evict.New with WithInUse(p),
// p.SetCacheHooks(eng)), both registering metrics on one registry that
// /metrics serves. The engine's index is built before it returns; run
// passes with eng.Pass or start eng.Run.
func newEvictEnv(t *testing.T, maxSize int64) (*env, *evict.Engine) {
	t.Helper()
	reg := prometheus.NewRegistry()
	e := newEnv(t, envOptions{proxyOpts: []proxy.Option{proxy.WithRegistry(reg)}})
	eng, err := evict.New(e.store, evict.Policy{MaxSize: maxSize}, evict.WithInUse(e.proxy), evict.WithRegisterer(reg))
	if err != nil {
		t.Fatal(err)
	}
	e.proxy.SetCacheHooks(eng)
	if err := eng.Index().Rebuild(context.Background(), e.store); err != nil {
		t.Fatal(err)
	}
	return e, eng
}

// TestMetricsAfterPullsAndEviction scrapes /metrics after a known
// sequence: three 1 MiB blobs pulled (three misses, three committed
// fills, 3 MiB from the upstream), one pulled again (a hit), then an
// eviction pass under a 2.5 MiB cap that removes the least recently used
// blob, and a manifest the upstream does not have.
func TestMetricsAfterPullsAndEviction(t *testing.T) {
	t.Parallel()
	const size = 1 << 20
	e, eng := newEvictEnv(t, 5*size/2)
	var ds []digest.Digest
	for i := range 3 {
		ds = append(ds, e.seedBlob(fmt.Sprintf("library/m%d:v1", i), size, uint64(50+i)))
	}
	for i, d := range ds {
		e.pullBlob(t, fmt.Sprintf("library/m%d", i), d, size)
	}
	// The last blob is the one used again: the first is the least recent.
	e.pullBlob(t, "library/m2", ds[2], size)
	res, err := eng.Pass(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Evicted) != 1 || res.Evicted[0] != ds[0] {
		t.Fatalf("evicted %v, want only %s (least recently used)", res.Evicted, ds[0])
	}
	// A tag the upstream does not have: an upstream error of class not_found.
	resp := e.get(context.Background(), http.MethodGet, "/v2/library/m0/manifests/nope", nil)
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("unknown tag: %d", resp.StatusCode)
	}
	m := scrape(t, e)
	for name, want := range map[string]float64{
		`stowage_cache_misses_total{kind="blob"}`:                               3,
		`stowage_cache_hits_total{kind="blob"}`:                                 1,
		`stowage_fills_total{outcome="committed"}`:                              3,
		`stowage_fill_duration_seconds_count{outcome="committed"}`:              3,
		`stowage_upstream_bytes_total{upstream="docker.io"}`:                    3 * size,
		`stowage_cache_evicted_objects_total{reason="size"}`:                    1,
		`stowage_cache_evicted_bytes_total{reason="size"}`:                      size,
		`stowage_cache_evicted_objects_total{reason="age"}`:                     0,
		`stowage_cache_bytes`:                                                   2 * size,
		`stowage_cache_objects`:                                                 2,
		`stowage_cache_capacity_bytes`:                                          5 * size / 2,
		`stowage_disk_full_episodes_total`:                                      0,
		`stowage_disk_full`:                                                     0,
		`stowage_upstream_errors_total{class="not_found",upstream="docker.io"}`: 1,
		`stowage_upstream_errors_total{class="storage",upstream="docker.io"}`:   -1, // absent
	} {
		got, ok := m[name]
		switch {
		case want < 0 && ok:
			t.Errorf("%s = %v, want absent", name, got)
		case want >= 0 && (!ok || got != want):
			t.Errorf("%s = %v (present %v), want %v", name, got, ok, want)
		}
	}
}

// scrape reads /metrics into "name{label="value",...}" -> value, labels
// sorted by name; a histogram gives name_count and name_sum.
func scrape(t *testing.T, e *env) map[string]float64 {
	t.Helper()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(strings.NewReader(e.metrics(t)))
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	out := map[string]float64{}
	for name, f := range fams {
		for _, m := range f.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			sort.Strings(labels)
			key := name
			if len(labels) > 0 {
				key += "{" + strings.Join(labels, ",") + "}"
			}
			keyed := func(suffix string) string {
				if len(labels) == 0 {
					return name + suffix
				}
				return name + suffix + "{" + strings.Join(labels, ",") + "}"
			}
			switch {
			case m.Counter != nil:
				out[key] = m.GetCounter().GetValue()
			case m.Gauge != nil:
				out[key] = m.GetGauge().GetValue()
			case m.Histogram != nil:
				out[keyed("_count")] = float64(m.GetHistogram().GetSampleCount())
				out[keyed("_sum")] = m.GetHistogram().GetSampleSum()
			}
		}
	}
	return out
}
