package proxy

import (
	"sync"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/hashicorp/golang-lru/v2/simplelru"
	"github.com/opencontainers/go-digest"

	"github.com/stowage/stowage/storage"
	"github.com/stowage/stowage/upstream"
)

// maxMemManifest is the largest manifest kept in memory; bigger ones (rare:
// huge indexes) are read from storage each time.
const maxMemManifest = 256 << 10

// tagMemoryLifetime is how long a tag resolution read from disk is reused
// from memory. The disk is the truth (another replica, `proxy import` or
// `proxy prefetch` may write it): after this the tag is read again, so a
// change there is seen within seconds, also with the upstream unreachable.
const tagMemoryLifetime = 5 * time.Second

// memCache is the in-process cache in front of storage for manifest bytes
// (an LRU bounded in bytes and entries) and tag resolutions (an LRU bounded
// in entries, each entry short-lived), so a manifest hit touches no disk.
type memCache struct {
	mu        sync.Mutex
	manifests *simplelru.LRU[string, cachedManifest]
	bytes     int64 // sum of the cached manifests' body sizes
	maxBytes  int64
	tags      *lru.Cache[string, memTag]
}

type cachedManifest struct {
	mediaType string
	body      []byte
}

type memTag struct {
	tag    storage.Tag
	readAt time.Time
}

// newMemCache bounds manifests to maxBytes of bodies (0: keep none) and
// entries, and tags to entries.
func newMemCache(entries int, maxBytes int64) (*memCache, error) {
	c := &memCache{maxBytes: maxBytes}
	m, err := simplelru.NewLRU(entries, func(_ string, v cachedManifest) {
		c.bytes -= int64(len(v.body)) // under c.mu: every LRU call is
	})
	if err != nil {
		return nil, err
	}
	t, err := lru.New[string, memTag](entries)
	if err != nil {
		return nil, err
	}
	c.manifests, c.tags = m, t
	return c, nil
}

func manifestKey(repo string, d digest.Digest) string { return repo + "@" + d.String() }
func tagKey(repo, tag string) string                  { return repo + ":" + tag }

func (c *memCache) manifest(repo string, d digest.Digest) (cachedManifest, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.manifests.Get(manifestKey(repo, d))
}

func (c *memCache) putManifest(repo string, d digest.Digest, mt string, body []byte) {
	size := int64(len(body))
	if size > maxMemManifest || size > c.maxBytes {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	key := manifestKey(repo, d)
	c.manifests.Remove(key)
	for c.bytes+size > c.maxBytes {
		if _, _, ok := c.manifests.RemoveOldest(); !ok {
			break
		}
	}
	c.manifests.Add(key, cachedManifest{mediaType: mt, body: body})
	c.bytes += size
}

// tag returns a tag resolution read from disk less than tagMemoryLifetime
// before now.
func (c *memCache) tag(repo, tag string, now time.Time) (storage.Tag, bool) {
	e, ok := c.tags.Get(tagKey(repo, tag))
	if !ok {
		return storage.Tag{}, false
	}
	if age := now.Sub(e.readAt); age < 0 || age >= tagMemoryLifetime {
		c.tags.Remove(tagKey(repo, tag))
		return storage.Tag{}, false
	}
	return e.tag, true
}

// putTag records a tag resolution as it is on disk at now.
func (c *memCache) putTag(repo, tag string, t storage.Tag, now time.Time) {
	c.tags.Add(tagKey(repo, tag), memTag{tag: t, readAt: now})
}

// forgetTag drops a tag resolution (its disk write failed).
func (c *memCache) forgetTag(repo, tag string) { c.tags.Remove(tagKey(repo, tag)) }

// tagPageCache keeps upstream tags/list pages for a short time. (Not
// golang-lru's expirable cache: it starts a goroutine per instance that
// cannot be stopped.)
type tagPageCache struct {
	mu    sync.Mutex
	pages map[string]tagPageEntry
}

type tagPageEntry struct {
	page *upstream.TagPage
	at   time.Time
}

// maxTagPages bounds the cache; past it, expired pages go, then all.
const maxTagPages = 1024

func newTagPageCache() *tagPageCache { return &tagPageCache{pages: map[string]tagPageEntry{}} }

func (c *tagPageCache) get(key string, now time.Time, ttl time.Duration) (*upstream.TagPage, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.pages[key]
	if !ok || now.Sub(e.at) >= ttl {
		return nil, false
	}
	return e.page, true
}

func (c *tagPageCache) put(key string, page *upstream.TagPage, now time.Time, ttl time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.pages) >= maxTagPages {
		for k, e := range c.pages {
			if now.Sub(e.at) >= ttl {
				delete(c.pages, k)
			}
		}
		if len(c.pages) >= maxTagPages {
			clear(c.pages)
		}
	}
	c.pages[key] = tagPageEntry{page: page, at: now}
}
