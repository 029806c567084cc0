package helm

import (
	"encoding/json"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

// TestCacheCapFromVolumeSize: config.cache.max_size defaults to
// persistence.cacheShare percent of the volume; an explicit max_size wins;
// an existing claim (size unknown) or a 0 share means no cap.
func TestCacheCapFromVolumeSize(t *testing.T) {
	t.Parallel()
	const gib = int64(1) << 30
	cases := []struct {
		name string
		vals map[string]any
		want int64
	}{
		{"default 80% of 50Gi", nil, 40 * gib},
		{"decimal size", map[string]any{"persistence": map[string]any{"size": "100G", "cacheShare": 50}}, 50_000_000_000 / (1 << 20) * (1 << 20)},
		{"explicit max_size", map[string]any{"config": map[string]any{"cache": map[string]any{"max_size": "7GiB"}}}, 7 * gib},
		{"no share", map[string]any{"persistence": map[string]any{"cacheShare": 0}}, 0},
		{"existing claim", map[string]any{"persistence": map[string]any{"existingClaim": "mine"}}, 0},
		{"emptyDir limit", map[string]any{"persistence": map[string]any{"enabled": false, "emptyDirSizeLimit": "10Gi"}}, 8 * gib},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			cfg := renderedConfig(t, mustRender(t, "", c.vals))
			if got := int64(cfg.Cache.MaxSize); got != c.want {
				t.Errorf("cache.max_size = %d, want %d", got, c.want)
			}
		})
	}
	if _, err := renderChart(loadValues(t, "", map[string]any{"persistence": map[string]any{"size": "50 parsecs"}})); err == nil ||
		!strings.Contains(err.Error(), "not a Kubernetes quantity") {
		t.Errorf("a size the chart cannot read: %v, want a clear failure", err)
	}
}

// TestGrafanaDashboard: with the ServiceMonitor comes a ConfigMap holding
// the dashboard, labelled for Grafana's sidecar, and the JSON is valid.
func TestGrafanaDashboard(t *testing.T) {
	t.Parallel()
	r := mustRender(t, allFeaturesFile, nil)
	d := r.find(t, "ConfigMap", "-dashboard")
	var cm corev1.ConfigMap
	if err := yaml.Unmarshal(d.json, &cm); err != nil {
		t.Fatal(err)
	}
	if cm.Labels["grafana_dashboard"] != "1" {
		t.Errorf("labels %v: want grafana_dashboard=1", cm.Labels)
	}
	var dash struct {
		Title  string `json:"title"`
		Panels []struct {
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal([]byte(cm.Data["stowage.json"]), &dash); err != nil {
		t.Fatalf("dashboard JSON: %v", err)
	}
	var exprs strings.Builder
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			exprs.WriteString(tg.Expr + "\n")
		}
	}
	for _, m := range []string{"stowage_cache_bytes", "stowage_cache_evicted_bytes_total", "stowage_fill_duration_seconds_bucket",
		"stowage_upstream_errors_total", "stowage_disk_full", "stowage_stale_serve_age_seconds_bucket",
		"stowage_fill_takeovers_total", "stowage_peer_streams_total", "stowage_redis_unavailable", "stowage_eviction_role"} {
		if !strings.Contains(exprs.String(), m) {
			t.Errorf("dashboard does not show %s", m)
		}
	}
	if n := mustRender(t, "", nil).count("ConfigMap"); n != 1 {
		t.Errorf("default values: %d ConfigMaps, want only the config (no ServiceMonitor, no dashboard)", n)
	}
}
