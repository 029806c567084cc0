package config_test

import (
	"strings"
	"testing"

	"github.com/stowage/stowage/config"
)

func TestParseBandwidth(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]config.Bandwidth{
		"4MB/s": 4_000_000, "10MiB/s": 10 << 20, "500KB/s": 500_000, "1.5GB/s": 1_500_000_000,
		"64KiB": 64 << 10, "50Mbit/s": 6_250_000, "8kbit/s": 1000, "1Gbit": 125_000_000,
		"0": 0, "1000": 1000, "1000B/s": 1000, "2 MB/s": 2_000_000,
	} {
		got, err := config.ParseBandwidth(in)
		if err != nil || got != want {
			t.Errorf("ParseBandwidth(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "fast", "-1MB/s", "4TB/s", "MB/s", "NaN", "1e300MB/s"} {
		if got, err := config.ParseBandwidth(in); err == nil {
			t.Errorf("ParseBandwidth(%q) = %d, want an error", in, got)
		}
	}
	for _, b := range []config.Bandwidth{4_000_000, 10 << 20, 1234, 1 << 30, 0} {
		back, err := config.ParseBandwidth(b.String())
		if err != nil || back != b {
			t.Errorf("%d -> %q -> %d, %v", b, b.String(), back, err)
		}
	}
}

func TestLinkAndLimitsLoad(t *testing.T) {
	t.Parallel()
	cfg, err := config.Load(strings.NewReader(`
upstreams:
  docker.io:
    limits:
      bandwidth: 4MB/s
      connections: 8
  ghcr.io:
    limits:
      bandwidth: 0
link:
  bandwidth: 10MiB/s
  prefetch_share: 30%
`))
	if err != nil {
		t.Fatal(err)
	}
	if l := cfg.Upstreams["docker.io"].Limits; l.Bandwidth != 4_000_000 || l.Connections != 8 {
		t.Errorf("docker.io limits = %+v", l)
	}
	if u, _ := cfg.Upstream("docker.io"); u.Limits.Bandwidth != 4_000_000 {
		t.Errorf("effective docker.io limits = %+v", u.Limits)
	}
	if cfg.Link.Bandwidth != 10<<20 || cfg.Link.PrefetchShare != 30 || cfg.Link.Direct {
		t.Errorf("link = %+v", cfg.Link)
	}

	def, err := config.Load(strings.NewReader(""))
	if err != nil {
		t.Fatal(err)
	}
	if def.Link.Bandwidth != 0 || def.Link.PrefetchShare != 30 {
		t.Errorf("default link = %+v, want no cap and a 30%% prefetch share", def.Link)
	}
	zero, err := config.Load(strings.NewReader("link: {prefetch_share: 0%}"))
	if err != nil || zero.Link.PrefetchShare != 0 {
		t.Errorf("prefetch_share 0%% = %v, %v", zero.Link.PrefetchShare, err)
	}

	for doc, want := range map[string]string{
		"link: {prefetch_share: 130%}":                             "prefetch_share",
		"link: {prefetch_share: -5%}":                              "prefetch_share",
		"link: {bandwidth: lots}":                                  "bandwidth",
		"link: {bandwidth: -1MB/s}":                                "negative",
		"upstreams: {docker.io: {limits: {connections: -1}}}":      "connections",
		"upstreams: {docker.io: {limits: {bandwidth: 3 parsecs}}}": "bandwidth",
		"upstreams: {docker.io: {limits: {speed: 1MB/s}}}":         "speed",
	} {
		if _, err := config.Load(strings.NewReader(doc)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: err = %v, want one naming %q", doc, err, want)
		}
	}
}
