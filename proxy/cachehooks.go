package proxy

import (
	"sync"

	"github.com/opencontainers/go-digest"
)

// CacheHooks is told what the cache gains and serves, so that a usage
// index (the eviction engine, storage/evict) stays current without
// scanning the store. Every call is cheap bookkeeping with no I/O; the
// proxy makes them on its request paths.
type CacheHooks interface {
	// Added: a blob was committed (size in bytes).
	Added(d digest.Digest, size int64)
	// ManifestAdded: manifest bytes were stored.
	ManifestAdded(d digest.Digest, size int64)
	// Touched: a blob or manifest was served from the cache.
	Touched(d digest.Digest)
	// Removed: the proxy deleted a blob itself.
	Removed(d digest.Digest)
	// Trigger: a write failed for lack of space; make room now.
	Trigger()
}

// SetCacheHooks installs the hooks (nil removes them). It may be called
// while the proxy serves.
func (p *Proxy) SetCacheHooks(h CacheHooks) {
	if h == nil {
		p.hooks.Store(nil)
		return
	}
	p.hooks.Store(&h)
}

// cacheHooks returns the installed hooks, or ones that do nothing.
func (p *Proxy) cacheHooks() CacheHooks {
	if h := p.hooks.Load(); h != nil {
		return *h
	}
	return noHooks{}
}

type noHooks struct{}

func (noHooks) Added(digest.Digest, int64)         {}
func (noHooks) ManifestAdded(digest.Digest, int64) {}
func (noHooks) Touched(digest.Digest)              {}
func (noHooks) Removed(digest.Digest)              {}
func (noHooks) Trigger()                           {}

// InUse reports whether a blob is being filled or served from the cache
// right now: eviction must leave it alone.
func (p *Proxy) InUse(d digest.Digest) bool {
	if _, ok := p.fills.Get(d); ok {
		return true
	}
	return p.serving.busy(d)
}

// BlobsInUse lists the cached blobs being served right now. With a
// cluster, the eviction engine reports them as used at every sync, so
// that no other replica evicts them (blobs being filled are not cached
// yet, so no eviction can reach them).
func (p *Proxy) BlobsInUse() []digest.Digest { return p.serving.list() }

// Coordinator returns the fill coordinator given WithCoordinator (nil
// without): the eviction engine shares its Redis client, namespace and
// circuit breaker.
func (p *Proxy) Coordinator() Coordinator { return p.coord }

// servingSet counts the responses streaming each cached blob.
type servingSet struct {
	mu sync.Mutex
	n  map[digest.Digest]int
}

// hold marks d as being served until the returned function is called.
func (s *servingSet) hold(d digest.Digest) func() {
	s.mu.Lock()
	if s.n == nil {
		s.n = map[digest.Digest]int{}
	}
	s.n[d]++
	s.mu.Unlock()
	return func() {
		s.mu.Lock()
		if s.n[d]--; s.n[d] <= 0 {
			delete(s.n, d)
		}
		s.mu.Unlock()
	}
}

func (s *servingSet) busy(d digest.Digest) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n[d] > 0
}

func (s *servingSet) list() []digest.Digest {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]digest.Digest, 0, len(s.n))
	for d := range s.n {
		out = append(out, d)
	}
	return out
}
