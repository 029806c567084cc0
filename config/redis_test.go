package config_test

import (
	"strings"
	"testing"

	"github.com/stowage/stowage/config"
)

// TestRedisNamespace: by default the namespace is derived from the shared
// storage (one cache, one namespace; two caches, two), and redis.namespace
// overrides it; a namespace that cannot be part of a key is refused.
func TestRedisNamespace(t *testing.T) {
	ns := func(f func(*config.Config)) string {
		c := config.Default()
		f(c)
		return c.RedisNamespace()
	}
	fs := func(root string) string { return ns(func(c *config.Config) { c.Storage.Root = root }) }
	s3 := func(bucket, root string) string {
		return ns(func(c *config.Config) {
			c.Storage.Driver = "s3"
			c.Storage.S3 = map[string]any{"bucket": bucket, "regionendpoint": "http://s3:8333", "rootdirectory": root}
		})
	}
	if fs("/cache/a") != fs("/cache/x/../a/") {
		t.Error("one root spelled twice: two namespaces")
	}
	if fs("/cache/a") == fs("/cache/b") {
		t.Error("two roots: one namespace")
	}
	if s3("b1", "/r") != s3("b1", "r") || s3("b1", "/r") == s3("b2", "/r") || s3("b1", "/r") == s3("b1", "/s") {
		t.Error("s3 namespaces do not follow bucket and root directory")
	}
	if got := ns(func(c *config.Config) { c.Redis.Namespace = "team-a" }); got != "team-a" {
		t.Errorf("explicit namespace: %q", got)
	}
	c := config.Default()
	c.Storage.Root = "/cache"
	if p := c.RedisPrefix(); !strings.HasPrefix(p, "stowage:") || !strings.HasSuffix(p, ":") {
		t.Errorf("prefix %q", p)
	}
	c.Redis.Namespace = "a b"
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "redis.namespace") {
		t.Errorf("namespace with a space: %v", err)
	}
}
