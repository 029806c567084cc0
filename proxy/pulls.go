package proxy

import "net/http"

// PullCounter is told of every pull: a client GET of a manifest (by tag
// or by digest) answered 200, the request Docker Hub counts. HEAD
// requests, 304 answers, errors and blob requests are not pulls. A
// multi-platform image pulled by a container runtime is usually two
// manifest GETs (the index and the platform's manifest), so two pulls.
// Pulled is called on the request path and must be cheap (no I/O).
type PullCounter interface {
	// Pulled: a manifest of repo (the cache repository,
	// "docker.io/library/alpine") was pulled.
	Pulled(repo string)
}

// SetPullCounter installs the counter (nil removes it). It may be called
// while the proxy serves.
func (p *Proxy) SetPullCounter(c PullCounter) {
	if c == nil {
		p.pulls.Store(nil)
		return
	}
	p.pulls.Store(&c)
}

// countPull counts a manifest answered 200, if it was a GET.
func (p *Proxy) countPull(r *http.Request, q *request) {
	if r.Method != http.MethodGet {
		return
	}
	if c := p.pulls.Load(); c != nil {
		(*c).Pulled(q.cacheRepo)
	}
}
