package proxy

import (
	"sync"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/opencontainers/go-digest"

	"github.com/stowage/stowage/storage"
	"github.com/stowage/stowage/upstream"
)

// maxMemManifest is the largest manifest kept in memory; bigger ones (rare:
// huge indexes) are read from storage each time.
const maxMemManifest = 256 << 10

// memCache is the in-process LRU in front of storage for manifest bytes and
// tag resolutions, so a manifest hit touches no disk.
type memCache struct {
	manifests *lru.Cache[string, cachedManifest]
	tags      *lru.Cache[string, storage.Tag]
}

type cachedManifest struct {
	mediaType string
	body      []byte
}

func newMemCache(entries int) (*memCache, error) {
	m, err := lru.New[string, cachedManifest](entries)
	if err != nil {
		return nil, err
	}
	t, err := lru.New[string, storage.Tag](entries)
	if err != nil {
		return nil, err
	}
	return &memCache{manifests: m, tags: t}, nil
}

func manifestKey(repo string, d digest.Digest) string { return repo + "@" + d.String() }
func tagKey(repo, tag string) string                  { return repo + ":" + tag }

func (c *memCache) manifest(repo string, d digest.Digest) (cachedManifest, bool) {
	return c.manifests.Get(manifestKey(repo, d))
}

func (c *memCache) putManifest(repo string, d digest.Digest, mt string, body []byte) {
	if len(body) <= maxMemManifest {
		c.manifests.Add(manifestKey(repo, d), cachedManifest{mediaType: mt, body: body})
	}
}

func (c *memCache) tag(repo, tag string) (storage.Tag, bool) { return c.tags.Get(tagKey(repo, tag)) }

func (c *memCache) putTag(repo, tag string, t storage.Tag) { c.tags.Add(tagKey(repo, tag), t) }

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
