package dashboard

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/stowage/stowage/config"
	"github.com/stowage/stowage/proxy"
	"github.com/stowage/stowage/storage"
	"github.com/stowage/stowage/upstream"
)

func TestValidRepo(t *testing.T) {
	t.Parallel()
	for name, want := range map[string]bool{
		"docker.io/library/alpine": true, "127.0.0.1_5000/team/app": true, "ghcr.io/org/a-b__c.d": true,
		"": false, "..": false, "docker.io/../x": false, "docker.io/a/../../b": false, "/docker.io/a": false,
		"docker.io/a/": false, "Docker.io/A": false,
	} {
		if got := validRepo(name); got != want {
			t.Errorf("validRepo(%q) = %v, want %v", name, got, want)
		}
	}
}

// TestSamplerRings: step by step under synctest, the sampler keeps one
// hour at its interval and one day at five minutes, and the stats are the
// differences between samples.
func TestSamplerRings(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store, err := storage.NewInMemory()
		if err != nil {
			t.Fatal(err)
		}
		defer store.Close()
		p, err := proxy.New(config.Default(), store, func(string, config.Upstream) (upstream.Registry, error) { return nil, nil })
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		// Counters named as the proxy's, stepped by the test.
		reg := prometheus.NewRegistry()
		hits := prometheus.NewCounterVec(prometheus.CounterOpts{Name: metricHits}, []string{"kind"})
		served := prometheus.NewCounterVec(prometheus.CounterOpts{Name: metricServed}, []string{"route"})
		up := prometheus.NewCounterVec(prometheus.CounterOpts{Name: metricUpstream}, []string{"upstream"})
		reg.MustRegister(hits, served, up)
		d, err := New(Options{Proxy: p, Store: store, Gatherer: reg, Token: "t", SampleInterval: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()

		stats := func(rng string) Stats {
			rec := httptest.NewRecorder()
			req := httptest.NewRequest(http.MethodGet, "/api/v1/stats?range="+rng, nil)
			req.Header.Set("Authorization", "Bearer t")
			d.ServeHTTP(rec, req)
			var s Stats
			if err := json.Unmarshal(rec.Body.Bytes(), &s); err != nil || rec.Code != http.StatusOK {
				t.Fatalf("stats: %d %v", rec.Code, err)
			}
			return s
		}
		if n := len(stats("hour").Points); n != 0 {
			t.Fatalf("points before the first tick: %d", n)
		}
		time.Sleep(10*time.Minute + time.Second)
		synctest.Wait()
		hits.WithLabelValues("blob").Add(3)
		served.WithLabelValues("blob").Add(1000)
		served.WithLabelValues("metrics").Add(50) // not registry traffic
		up.WithLabelValues("docker.io").Add(400)
		time.Sleep(time.Minute)
		synctest.Wait()
		last := stats("hour").Points[10]
		if last.Hits != 3 || last.HitRatio != 1 || last.ServedBytes != 1000 || last.UpstreamBytes != 400 {
			t.Fatalf("point after traffic: %+v", last)
		}
		if h, dd := stats("hour"), stats("day"); len(h.Points) != 11 || len(dd.Points) != 2 || h.StepSecs != 60 || dd.StepSecs != 300 {
			t.Fatalf("after 11 min: hour %d points (step %v), day %d", len(h.Points), h.StepSecs, len(dd.Points))
		}
		time.Sleep(3 * time.Hour)
		synctest.Wait()
		h, dd := stats("hour"), stats("day")
		if len(h.Points) != 60 || len(dd.Points) != 38 {
			t.Fatalf("after 3 h: hour %d points, day %d", len(h.Points), len(dd.Points))
		}
		if span := h.Points[len(h.Points)-1].T.Sub(h.Points[0].T); span != 59*time.Minute {
			t.Errorf("hour span %v", span)
		}
		for _, pt := range h.Points {
			if pt.HitRatio != -1 || pt.Hits != 0 {
				t.Errorf("idle point: %+v", pt)
			}
		}
		var sum float64
		for _, pt := range dd.Points {
			sum += pt.ServedBytes
		}
		if sum != 1000 {
			t.Errorf("day points sum %v served bytes, want 1000", sum)
		}
	})
}
