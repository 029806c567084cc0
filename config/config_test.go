package config_test

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stowage/stowage/config"
)

func TestDefaultIsValid(t *testing.T) {
	t.Parallel()
	c := config.Default()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.Listen != ":5000" || c.Storage.Root != "./data" || c.DefaultUpstream != "docker.io" {
		t.Fatalf("defaults: %+v", c)
	}
	for _, host := range []string{"docker.io", "ghcr.io", "quay.io", "registry.k8s.io", "gcr.io", "mcr.microsoft.com"} {
		u, ok := c.Upstream(host)
		if !ok || len(u.Endpoints) != 1 || !strings.HasPrefix(u.Endpoints[0], "https://") {
			t.Errorf("preset %s: %v %v", host, ok, u.Endpoints)
		}
	}
	if _, ok := c.Upstream("evil.example.com"); ok {
		t.Fatal("unknown host resolved")
	}
	for _, alias := range []string{"index.docker.io", "registry-1.docker.io"} {
		if config.CanonicalHost(alias) != "docker.io" {
			t.Errorf("alias %s", alias)
		}
	}
}

// TestExampleLoads keeps config/example.yaml true: it must load strictly
// and mean what it says.
func TestExampleLoads(t *testing.T) {
	t.Parallel()
	c, err := config.LoadFile("example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	u, ok := c.Upstream("docker.io")
	if !ok || len(u.Endpoints) != 2 || u.Timeouts.Stall != 60*time.Second || u.Retry.Attempts != 4 {
		t.Fatalf("docker.io from example: %+v", u)
	}
	if h, ok := c.Upstream("harbor.internal"); !ok || !h.Internal || h.TLS.CAFile == "" {
		t.Fatalf("harbor from example: %+v", h)
	}
	if _, ok := c.Upstream("nvcr.io"); ok || !c.Presets {
		t.Fatalf("example: presets %v, nvcr.io must be disabled", c.Presets)
	}
	if c.Cache.TagTTL != 5*time.Minute {
		t.Fatalf("tag_ttl %s", c.Cache.TagTTL)
	}
	if u.Limits.Bandwidth != 4_000_000 || u.Limits.Connections != 8 || c.Link.Bandwidth != 10_000_000 || c.Link.PrefetchShare != 30 {
		t.Fatalf("limits %+v, link %+v from example", u.Limits, c.Link)
	}
}

func TestLoadErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, yaml, want string }{
		{"unknown field", "listne: :5000\n", "field listne not found"},
		{"bad duration", "cache:\n  tag_ttl: soon\n", "line 2"},
		{"bad driver", "storage:\n  driver: s4\n", "storage.driver"},
		{"unknown default", "default_upstream: nowhere.example\n", "default_upstream"},
		{"endpoint scheme", "upstreams:\n  r.example:\n    endpoints: [ftp://x]\n", "endpoint"},
		{"no endpoint", "upstreams:\n  r.example: {}\n", "endpoints required"},
		{"cert without key", "upstreams:\n  ghcr.io:\n    tls: {cert_file: a.pem}\n", "go together"},
		{"alias key", "upstreams:\n  index.docker.io: {}\n", "canonical"},
		{"log level", "log: {level: loud}\n", "log.level"},
		{"negative", "cache: {tag_ttl: -1m}\n", "negative"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := config.Load(strings.NewReader(tc.yaml))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want it to mention %q", err, tc.want)
			}
		})
	}
}

// TestSecretsNeverPrinted: a proxy URL's password is not echoed by
// validation, and Auth masks its password in every format.
func TestSecretsNeverPrinted(t *testing.T) {
	t.Parallel()
	const secret = "hunter2-very-secret"
	_, err := config.Load(strings.NewReader("upstreams:\n  ghcr.io:\n    proxy: \"ftp://u:" + secret + "@p\"\n"))
	if err == nil || strings.Contains(err.Error(), secret) {
		t.Fatalf("error %v", err)
	}
	a := config.Auth{Username: "u", Password: secret}
	for _, s := range []string{fmt.Sprint(a), fmt.Sprintf("%v %+v %#v %s", a, a, a, a)} {
		if strings.Contains(s, secret) {
			t.Fatalf("secret printed: %s", s)
		}
	}
}

func TestFileOverridesDefaultsFieldByField(t *testing.T) {
	t.Parallel()
	c, err := config.Load(strings.NewReader("cache:\n  tag_ttl: 1h\nupstreams:\n  ghcr.io:\n    proxy: direct\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Cache.TagTTL != time.Hour || c.Cache.MemoryEntries != 4096 || c.Listen != ":5000" {
		t.Fatalf("%+v", c.Cache)
	}
	u, _ := c.Upstream("ghcr.io")
	if u.Proxy != "direct" || len(u.Endpoints) != 1 || u.Endpoints[0] != "https://ghcr.io" {
		t.Fatalf("ghcr.io: %+v", u)
	}
}

// FuzzLoad: the loader never panics and a config it accepts validates.
func FuzzLoad(f *testing.F) {
	if b, err := os.ReadFile("example.yaml"); err == nil {
		f.Add(string(b))
	}
	f.Add("listen: :5000\n")
	f.Add("upstreams:\n  docker.io:\n    endpoints: [http://127.0.0.1:1]\n")
	f.Fuzz(func(t *testing.T, doc string) {
		c, err := config.Load(strings.NewReader(doc))
		if err != nil {
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("accepted config does not validate: %v", err)
		}
	})
}
