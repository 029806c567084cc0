package proxy

import (
	"context"
	"errors"
	"time"

	"github.com/stowage/stowage/proxy/internal/fill"
	"github.com/stowage/stowage/upstream"
)

// errFillClosed ends fills when the proxy shuts down (Proxy.Close).
var errFillClosed = fill.ErrClosed

// joinFill returns a hold on the running fill for q's digest, starting one
// (downloading from q's host and repository) when none runs. The caller
// turns the hold into a reader, follows it, or releases it, and calls
// leave when it stops waiting: until then ctx's traffic class (a client,
// or a prefetch run) counts for the download's share of the link budget.
//
// Past the cap on running fills (cache.fill.max_concurrent) a client is
// refused (fill.ErrTooMany: 503 with Retry-After) while a prefetch run,
// which nobody waits for, waits for a free slot until ctx ends.
func (p *Proxy) joinFill(ctx context.Context, q *request) (h *fill.Hold, leave func(), err error) {
	wait := prefetchSlotWait
	for {
		h, leave, err = p.tryJoinFill(ctx, q)
		if !errors.Is(err, fill.ErrTooMany) || upstream.ClassOf(ctx) != upstream.ClassPrefetch {
			return h, leave, err
		}
		select {
		case <-ctx.Done():
			return nil, nil, errors.Join(err, context.Cause(ctx))
		case <-time.After(wait):
		}
		wait = min(2*wait, maxPrefetchSlotWait)
	}
}

// How often a prefetch waiting for a fill slot tries again.
const (
	prefetchSlotWait    = 100 * time.Millisecond
	maxPrefetchSlotWait = 2 * time.Second
)

func (p *Proxy) tryJoinFill(ctx context.Context, q *request) (h *fill.Hold, leave func(), err error) {
	cacheRepo := q.cacheRepo
	waiters := &upstream.Waiters{}
	h, _, err = p.fills.Join(fill.Start{
		Digest: q.dgst, Host: q.host, Repo: q.repo, Value: waiters,
		Run: func(ctx context.Context, f *fill.Fill) error {
			p.m.fillsInFlight.Inc()
			// Client traffic while a client waits, prefetch traffic
			// otherwise (upstream.Budget).
			ctx = upstream.WithClassFunc(ctx, waiters.Class)
			return p.runFill(ctx, f, cacheRepo)
		},
		End: p.endFill,
	})
	if err != nil {
		return nil, nil, err
	}
	if w, ok := h.Fill().Value().(*upstream.Waiters); ok {
		return h, w.Join(ctx), nil
	}
	return h, func() {}, nil
}

// endFill logs and counts a fill's outcome.
func (p *Proxy) endFill(f *fill.Fill, err error) {
	_, cached, _, _ := f.Outcome()
	outcome := "committed"
	switch {
	case err != nil && errors.Is(err, fill.ErrCancelled):
		outcome = "cancelled"
	case err != nil && errors.Is(err, fill.ErrAbandoned):
		outcome = "abandoned"
	case err != nil:
		outcome = "failed"
	case cached:
		outcome = "cached" // committed before this fill: nothing downloaded
	}
	if err != nil {
		p.log.Warn("blob fill failed", "digest", f.Digest(), "upstream", f.Host(), "repo", f.Repo(), "outcome", outcome, "err", err)
	}
	p.m.fillsInFlight.Dec()
	p.m.fills.WithLabelValues(outcome).Inc()
	p.m.fillDuration.WithLabelValues(outcome).Observe(time.Since(f.Info().Started).Seconds())
	if outcome == "failed" {
		p.m.upstreamErrors.WithLabelValues(f.Host(), errorClass(err)).Inc()
	}
}

// sameOrigin reports whether q asks through the repository a fill
// downloads from.
func sameOrigin(f *fill.Fill, q *request) bool {
	return f.Host() == q.host && f.Repo() == q.repo
}

// repoSpecific reports an upstream answer about one repository (unknown,
// unauthorised, denied): another repository may well have the blob.
func repoSpecific(err error) bool {
	return errors.Is(err, upstream.ErrNotFound) || errors.Is(err, upstream.ErrUnauthorized) ||
		errors.Is(err, upstream.ErrDenied)
}

// confirmRepo asks the upstream whether q's repository has the blob before
// it is served bytes fetched for another repository (a digest is no
// password). link is false when the upstream could not be asked
// (temporarily failing): the blob is then served, but no link is written,
// so the next request asks again.
func (p *Proxy) confirmRepo(ctx context.Context, q *request) (link bool, err error) {
	reg, err := p.upstream(q.host)
	if err != nil {
		return false, err
	}
	uctx, cancel := p.upstreamCtx(ctx, q.host)
	defer cancel()
	if _, err := reg.HeadBlob(uctx, q.repo, q.dgst); err != nil {
		if upstream.Temporary(err) && ctx.Err() == nil {
			p.log.Info("upstream unavailable; serving the blob without linking it", "repo", q.cacheRepo, "digest", q.dgst, "err", err)
			return false, nil
		}
		return false, err
	}
	return true, nil
}

// errorClass names the class of a failed fill for
// stowage_upstream_errors_total; "storage" is the cache's own failure.
func errorClass(err error) string {
	switch {
	case isDiskFull(err), isStorageFailure(err):
		return "storage"
	case errors.Is(err, upstream.ErrNotFound):
		return "not_found"
	case errors.Is(err, upstream.ErrUnauthorized), errors.Is(err, upstream.ErrDenied):
		return "denied"
	case errors.Is(err, upstream.ErrTooManyRequests):
		return "rate_limited"
	case errors.Is(err, upstream.ErrDigestMismatch):
		return "digest_mismatch"
	case errors.Is(err, upstream.ErrInvalid), errors.Is(err, upstream.ErrRangeNotSatisfiable), errors.Is(err, upstream.ErrTooLarge):
		return "invalid"
	case errors.Is(err, upstream.ErrUnavailable), errors.Is(err, context.DeadlineExceeded):
		return "unavailable"
	}
	return "other"
}
