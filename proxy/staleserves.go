package proxy

import (
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
	p.stale.Add(s)
}

// RecentStaleServes returns the last StaleServesKept tags served stale,
// newest first.
func (p *Proxy) RecentStaleServes() []StaleServe { return p.stale.List() }
