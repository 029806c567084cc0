package upstream_test

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/stowage/stowage/config"
	"github.com/stowage/stowage/upstream"
)

// A client for Docker Hub through a corporate proxy, with credentials from
// the environment and rate-limit headers exported as metrics.
func Example() {
	cfg := config.Default()
	cfg.Upstreams = map[string]config.Upstream{"docker.io": {
		Auth:    config.Auth{UsernameEnv: "HUB_USER", PasswordEnv: "HUB_TOKEN"},
		Proxy:   "http://proxy.corp:3128",
		NoProxy: []string{".corp", "10.0.0.0/8"},
	}}
	up, ok := cfg.Upstream("docker.io")
	if !ok {
		return
	}
	c, err := upstream.New("docker.io", up,
		upstream.WithUserAgent("stowage/1.0.0"),
		upstream.WithLogger(slog.Default()),
		upstream.WithRateLimitObserver(func(host string, limit, remaining int) {
			fmt.Println(host, limit, remaining) // e.g. set a gauge
		}))
	if err != nil {
		fmt.Println(err) // HUB_USER is not set here
		return
	}
	defer c.Close()
	m, err := c.HeadManifest(context.Background(), "library/alpine", "3.20", nil)
	if err != nil {
		return
	}
	fmt.Println(m.Digest)
}
