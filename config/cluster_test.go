package config_test

import (
	"strings"
	"testing"

	"github.com/stowage/stowage/config"
)

// TestClusterValidated: peer streaming needs its own listener, Redis and a
// secret; without cluster.listen nothing is required.
func TestClusterValidated(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		set  func(*config.Config)
		want string // "" valid, else part of the error
	}{
		{"off by default", func(*config.Config) {}, ""},
		{"complete", func(c *config.Config) {
			c.Redis.Addr = "redis:6379"
			c.Cluster = config.Cluster{Listen: ":5001", SecretFile: "/run/secret"}
		}, ""},
		{"same listener as the client API", func(c *config.Config) {
			c.Redis.Addr = "redis:6379"
			c.Cluster = config.Cluster{Listen: ":5000", SecretEnv: "S"}
		}, "must differ from listen"},
		{"no redis", func(c *config.Config) { c.Cluster = config.Cluster{Listen: ":5001", SecretEnv: "S"} }, "redis.addr"},
		{"no secret", func(c *config.Config) {
			c.Redis.Addr = "redis:6379"
			c.Cluster = config.Cluster{Listen: ":5001"}
		}, "secret"},
		{"bad listen", func(c *config.Config) {
			c.Redis.Addr = "redis:6379"
			c.Cluster = config.Cluster{Listen: "5001", SecretEnv: "S"}
		}, "cluster.listen"},
		{"negative stall", func(c *config.Config) {
			c.Redis.Addr = "redis:6379"
			c.Cluster = config.Cluster{Listen: ":5001", SecretEnv: "S", StallTimeout: -1}
		}, "stall_timeout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := config.Default()
			tc.set(c)
			err := c.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Fatal(err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("error %v, want %q", err, tc.want)
			}
		})
	}
}
