package proxy

import (
	"context"
	"fmt"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/stowage/stowage/proxy/internal/fill"
)

// Coordinator arbitrates blob fills between processes that share one
// storage backend, so that a cluster downloads each blob once. Without one,
// a process coordinates only with itself (the fill registry) and stays
// correct: several replicas may then download the same blob, and the
// commits are atomic and identical.
type Coordinator interface {
	// TryAcquire tries to become the one downloader of key. When acquired
	// is true the lease is held (and kept alive) until release is called.
	// When false, another process holds it.
	TryAcquire(ctx context.Context, key string) (release func(), acquired bool, err error)
	// Held reports whether any process holds key.
	Held(ctx context.Context, key string) (bool, error)
}

// WithCoordinator sets the cluster-wide fill coordinator (e.g. Redis
// leases).
func WithCoordinator(c Coordinator) Option { return func(o *options) { o.coord = c } }

// leasePoll is how often a waiting replica checks for the owner's commit.
const leasePoll = 100 * time.Millisecond

// maxLeaseWait bounds how long a replica waits for another one's fill.
const maxLeaseWait = 30 * time.Minute

// acquireFill returns a release function when this process should download
// d, or waited=true when another process committed it meanwhile. A
// coordinator failure falls back to downloading locally (correct, if not
// deduplicated), with a log line.
func (p *Proxy) acquireFill(ctx context.Context, d digest.Digest) (release func(), waited bool, err error) {
	if p.coord == nil {
		return func() {}, false, nil
	}
	key := "fill:" + d.String()
	deadline := time.Now().Add(maxLeaseWait)
	for time.Now().Before(deadline) {
		rel, ok, err := p.coord.TryAcquire(ctx, key)
		if err != nil {
			p.log.Warn("fill coordinator unavailable; downloading without a cluster lease", "digest", d, "err", err)
			return func() {}, false, nil
		}
		if ok {
			// The owner may have committed between our look-up and now.
			if _, serr := p.store.StatBlob(ctx, d); serr == nil {
				rel()
				return nil, true, nil
			}
			return rel, false, nil
		}
		// Another replica downloads: wait for its commit, or for its lease
		// to end without one (then try to take over).
		for {
			if _, serr := p.store.StatBlob(ctx, d); serr == nil {
				return nil, true, nil
			}
			held, herr := p.coord.Held(ctx, key)
			if herr != nil || !held {
				break
			}
			select {
			case <-time.After(leasePoll):
			case <-ctx.Done():
				return nil, false, context.Cause(ctx) // cancelled, closed or past max_duration
			}
			if time.Now().After(deadline) {
				break
			}
		}
	}
	return nil, false, fmt.Errorf("%w: waited %s for %s", fill.ErrLeaseTimeout, maxLeaseWait, d)
}
