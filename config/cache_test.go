package config_test

import (
	"testing"
	"time"

	"github.com/stowage/stowage/config"
)

// TestCacheDefaults: max_stale is finite by default, manifests in memory
// are bounded in bytes, and a negative byte bound is refused.
func TestCacheDefaults(t *testing.T) {
	t.Parallel()
	c := config.Default()
	if c.Cache.MaxStale != 7*24*time.Hour || c.Cache.MemoryBytes != 64<<20 {
		t.Fatalf("max_stale %s, memory_bytes %d", c.Cache.MaxStale, c.Cache.MemoryBytes)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	c.Cache.MemoryBytes = -1
	if err := c.Validate(); err == nil {
		t.Fatal("negative memory_bytes accepted")
	}
}
