package proxy

import (
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/stowage/stowage/storage"
)

// TestMemCacheBoundedInBytes: manifest bodies stay within the byte bound
// whatever the entry count allows; the oldest go first.
func TestMemCacheBoundedInBytes(t *testing.T) {
	t.Parallel()
	c, err := newMemCache(1000, 10<<10)
	if err != nil {
		t.Fatal(err)
	}
	body := make([]byte, 3<<10)
	var ds []digest.Digest
	for i := range 5 {
		d := digest.FromString(string(rune('a' + i)))
		ds = append(ds, d)
		c.putManifest("r", d, "t", body)
		if c.bytes > 10<<10 {
			t.Fatalf("after %d manifests: %d bytes held, bound 10 KiB", i+1, c.bytes)
		}
	}
	if _, ok := c.manifest("r", ds[0]); ok {
		t.Fatal("the oldest manifest is still held")
	}
	if _, ok := c.manifest("r", ds[4]); !ok {
		t.Fatal("the newest manifest was dropped")
	}
	c.putManifest("r", ds[4], "t", body) // re-adding does not double count
	if c.bytes != 9<<10 {
		t.Fatalf("%d bytes held, want 9 KiB", c.bytes)
	}
}

// TestMemCacheTagLifetime: a tag resolution is reused only for
// tagMemoryLifetime after it was read from disk.
func TestMemCacheTagLifetime(t *testing.T) {
	t.Parallel()
	c, err := newMemCache(10, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	c.putTag("r", "v1", storage.Tag{Digest: digest.FromString("x")}, now)
	if _, ok := c.tag("r", "v1", now.Add(tagMemoryLifetime-time.Millisecond)); !ok {
		t.Fatal("dropped within its lifetime")
	}
	if _, ok := c.tag("r", "v1", now.Add(tagMemoryLifetime)); ok {
		t.Fatal("served past its lifetime")
	}
}
