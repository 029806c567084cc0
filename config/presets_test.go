package config_test

import (
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/stowage/stowage/config"
)

// TestPresetsCanBeTurnedOff: presets: false leaves only the configured
// upstreams; disabled: true turns off one preset or configured entry; the
// default upstream must be enabled.
func TestPresetsCanBeTurnedOff(t *testing.T) {
	t.Parallel()
	load := func(t *testing.T, doc string) *config.Config {
		t.Helper()
		c, err := config.Load(strings.NewReader(doc))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	t.Run("all off", func(t *testing.T) {
		t.Parallel()
		c := load(t, "presets: false\ndefault_upstream: harbor.corp\nupstreams:\n  harbor.corp:\n    endpoints: [https://harbor.corp]\n  ghcr.io: {}\n")
		for host := range config.Presets() {
			_, ok := c.Upstream(host)
			if want := host == "ghcr.io"; ok != want {
				t.Errorf("Upstream(%s) ok = %v, want %v", host, ok, want)
			}
		}
		if u, ok := c.Upstream("ghcr.io"); !ok || len(u.Endpoints) != 1 || u.Endpoints[0] != "https://ghcr.io" {
			t.Errorf("listed preset: %v %+v", ok, u)
		}
		if _, ok := c.Upstream("index.docker.io"); ok {
			t.Error("docker.io alias resolved with presets off")
		}
		if got := c.Hosts(); !slices.Equal(got, []string{"ghcr.io", "harbor.corp"}) {
			t.Errorf("Hosts() = %v", got)
		}
	})
	t.Run("one off", func(t *testing.T) {
		t.Parallel()
		c := load(t, "upstreams:\n  quay.io: {disabled: true}\n  harbor.corp:\n    endpoints: [https://harbor.corp]\n    disabled: true\n  old.corp: {disabled: true}\n")
		for _, host := range []string{"quay.io", "harbor.corp", "old.corp"} {
			if _, ok := c.Upstream(host); ok {
				t.Errorf("disabled %s resolved", host)
			}
		}
		if _, ok := c.Upstream("ghcr.io"); !ok {
			t.Error("other presets must stay on")
		}
		if slices.Contains(c.Hosts(), "quay.io") || !slices.Contains(c.Hosts(), "nvcr.io") {
			t.Errorf("Hosts() = %v", c.Hosts())
		}
	})
	for name, doc := range map[string]string{
		"presets off":      "presets: false\n",
		"default disabled": "upstreams:\n  docker.io: {disabled: true}\n",
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			_, err := config.Load(strings.NewReader(doc))
			if err == nil || !strings.Contains(err.Error(), "default_upstream") || !strings.Contains(err.Error(), "not an enabled upstream") {
				t.Fatalf("err = %v, want a default_upstream error", err)
			}
		})
	}
}

// TestPresetListsAgree: the preset list in the package documentation and
// the README intro name exactly the presets the code has.
func TestPresetListsAgree(t *testing.T) {
	t.Parallel()
	var hosts []string
	for h := range config.Presets() {
		hosts = append(hosts, h)
	}
	for _, file := range []string{"config.go", "doc.go", "upstream.go", "example.yaml", "../README.md"} {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		text := strings.Join(strings.Fields(string(b)), " ")
		for _, h := range hosts {
			if !strings.Contains(text, h) {
				t.Errorf("%s does not name preset %s", file, h)
			}
		}
	}
}
