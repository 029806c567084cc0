package proxy

import (
	"sync"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/stowage/stowage/storage"
)

// StaleServesKept is how many stale serves RecentStaleServes keeps.
const StaleServesKept = 100

// StaleServe is one tag served past its TTL because its upstream failed.
type StaleServe struct {
	Time       time.Time     `json:"time"`
	Repository string        `json:"repository"` // in the cache: host/name
	Tag        string        `json:"tag"`
	Digest     digest.Digest `json:"digest"`
	// AgeSeconds is how long ago the tag was fetched, -1 when its time
	// record is unreadable.
	AgeSeconds float64 `json:"age_seconds"`
	Upstream   string  `json:"upstream"`
	Error      string  `json:"error"`
}

// staleRing keeps the last StaleServesKept stale serves; the zero value
// is ready.
type staleRing struct {
	mu   sync.Mutex
	buf  []StaleServe
	next int // where the next one goes once buf is full
}

func (r *staleRing) add(s StaleServe) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.buf) < StaleServesKept {
		r.buf = append(r.buf, s)
		return
	}
	r.buf[r.next] = s
	r.next = (r.next + 1) % StaleServesKept
}

func (r *staleRing) list() []StaleServe {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]StaleServe, 0, len(r.buf))
	for i := range len(r.buf) {
		out = append(out, r.buf[(r.next-1-i+2*len(r.buf))%len(r.buf)])
	}
	return out
}

// recordStaleServe notes that q's tag was served stale (local is the copy
// served, cause the upstream's failure).
func (p *Proxy) recordStaleServe(q *request, local storage.Tag, cause error) {
	s := StaleServe{Time: p.now(), Repository: q.cacheRepo, Tag: q.tag, Digest: local.Digest,
		AgeSeconds: -1, Upstream: q.host}
	if !local.TimeUnreadable {
		s.AgeSeconds = p.now().Sub(local.FetchedAt).Seconds()
	}
	if cause != nil {
		s.Error = cause.Error()
	}
	p.stale.add(s)
}

// RecentStaleServes returns the last StaleServesKept tags served stale,
// newest first.
func (p *Proxy) RecentStaleServes() []StaleServe { return p.stale.list() }
