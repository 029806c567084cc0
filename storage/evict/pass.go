package evict

// The eviction pass: what it must free, what it may remove, and who runs
// it (every pass on this replica alone, or only the holder of the
// cluster's eviction lease).

import (
	"context"
	"fmt"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/stowage/stowage/storage/evict/lead"
)

func (e *Engine) runPass(ctx context.Context, urgent bool) {
	if urgent && e.lead != nil && e.lead.Role() == lead.Follower {
		e.requestPass(ctx)
		return
	}
	res, err := e.Pass(ctx)
	e.passDone(ctx, res, err)
}

// passDone logs (once per episode of shortage) and reports a pass.
func (e *Engine) passDone(ctx context.Context, res PassResult, err error) {
	if err != nil && ctx.Err() == nil {
		e.log.Warn("eviction pass", "err", err)
	}
	if res.Objects > 0 {
		e.log.Info("evicted", "objects", res.Objects, "bytes", res.Bytes, "short_by", res.ShortBy)
	}
	// Logged once per episode: every pass of it would repeat the same.
	if short := res.ShortBy > 0; short != e.short {
		e.short = short
		if short {
			e.log.Warn("cannot evict enough: what is left is pinned, in use, manifests or within the grace period",
				"short_by", res.ShortBy)
		} else {
			e.log.Info("usage is within the cache's limits again")
		}
	}
	if e.afterPass != nil {
		e.afterPass(res, err)
	}
}

// PassResult is what one pass did.
type PassResult struct {
	// Evicted are the removed blobs, in order.
	Evicted []digest.Digest
	Objects int
	Bytes   int64
	// ShortBy is how many bytes the pass could not free because what was
	// left is protected (pinned, in use, in its grace period, manifests).
	ShortBy int64
}

// requestPass asks the leader for a pass, at most once per sync interval
// (it runs it within one lease interval).
func (e *Engine) requestPass(ctx context.Context) {
	now := e.now()
	e.pmu.Lock()
	skip := now.Sub(e.requestedAt) < e.syncInterval
	if !skip {
		e.requestedAt = now
	}
	e.pmu.Unlock()
	if skip || !e.lead.Request(ctx) || !e.index.IsReady() {
		return
	}
	// The lease store cannot be reached and room is needed now: a pass
	// over this replica's own view.
	now = e.now()
	res, err := e.pass(ctx, &localView{x: e.index, note: e.noteRemoved, until: now.Add(-e.policy.Grace)}, now)
	e.passDone(ctx, res, err)
}

// Pass runs one eviction pass now, over the view this replica's role
// gives: the cluster's as the holder of the eviction lease, none as
// another replica of a cluster (the holder evicts), the local index
// without a cluster or while the lease store is unavailable. It does
// nothing until the index is ready.
func (e *Engine) Pass(ctx context.Context) (PassResult, error) {
	var res PassResult
	if !e.index.IsReady() {
		return res, nil
	}
	role := lead.Local
	if e.lead != nil {
		role = e.lead.Role()
	}
	now := e.now()
	graceEnd := now.Add(-e.policy.Grace)
	var v view
	switch role {
	case lead.Follower:
		return res, nil
	case lead.Leader:
		// This replica's own changes first, so the view is complete.
		if err := e.flush(ctx); err != nil {
			return res, fmt.Errorf("evict: cluster usage: %w", err)
		}
		if !e.totals().Seeded {
			return res, nil // the next sync seeds it
		}
		v = &sharedView{e: e, until: graceEnd}
	default:
		v = &localView{x: e.index, note: e.noteRemoved, until: graceEnd}
	}
	return e.pass(ctx, v, now)
}

// pass evicts from v, least recently used first.
func (e *Engine) pass(ctx context.Context, v view, now time.Time) (PassResult, error) {
	var res PassResult
	need, reason, err := e.need(ctx, v)
	if err != nil {
		return res, err
	}
	if need <= 0 && e.policy.EvictAfter == 0 {
		return res, nil
	}
	var ageEnd time.Time
	if e.policy.EvictAfter > 0 {
		ageEnd = now.Add(-e.policy.EvictAfter)
	}
	var (
		pinned map[digest.Digest]bool
		repos  []string
		freed  int64
	)
	for {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		b, ok, err := v.next(ctx)
		if err != nil {
			return res, err
		}
		if !ok {
			break
		}
		why := ""
		switch {
		case !ageEnd.IsZero() && !b.LastUsed.After(ageEnd):
			why = ReasonAge
		case freed < need:
			why = reason
		}
		if why == "" {
			break
		}
		if pinned == nil {
			// Read once per pass, and only when something may go.
			if pinned, err = e.store.PinnedBlobs(ctx); err != nil {
				return res, fmt.Errorf("evict: pins: %w", err)
			}
			if repos, err = e.store.LinkedRepositories(ctx); err != nil {
				return res, fmt.Errorf("evict: repositories: %w", err)
			}
		}
		if pinned[b.Digest] || (e.inUse != nil && e.inUse.InUse(b.Digest)) {
			continue
		}
		// A hit may have come in since the view was read.
		if unused, err := v.stillUnused(ctx, b); err != nil || !unused {
			if err != nil {
				return res, err
			}
			continue
		}
		if err := v.mayRemove(); err != nil {
			return res, err
		}
		if _, err := e.store.RemoveBlob(ctx, b.Digest, repos); err != nil {
			return res, err
		}
		if err := v.removed(ctx, b.Digest); err != nil {
			return res, err
		}
		freed += b.Size
		res.Evicted = append(res.Evicted, b.Digest)
		res.Objects++
		res.Bytes += b.Size
		e.metrics.evicted(why, b.Size)
		e.recent.Add(Eviction{Time: e.now(), Digest: b.Digest, Size: b.Size, Reason: why})
	}
	if freed < need {
		res.ShortBy = need - freed
	}
	return res, nil
}

// need returns the bytes a pass must free and why.
func (e *Engine) need(ctx context.Context, v view) (int64, string, error) {
	var (
		need   int64
		reason string
	)
	used, err := v.usage(ctx)
	if err != nil {
		return 0, "", err
	}
	if e.policy.MaxSize > 0 {
		if used > e.policy.MaxSize {
			need, reason = used-int64(float64(e.policy.MaxSize)*LowWatermark), ReasonSize
		}
	}
	if e.policy.MinFree != nil {
		total, free, err := e.disk()
		if err != nil {
			return 0, "", fmt.Errorf("evict: free space: %w", err)
		}
		if floor := e.policy.MinFree(total); free < floor {
			if n := int64(floor + floor/10 - free); n > need {
				need, reason = n, ReasonFreeSpace
			}
		}
	}
	return need, reason, nil
}
