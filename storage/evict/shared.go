package evict

import (
	"context"
	"errors"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/stowage/stowage/storage/evict/lead"
	"github.com/stowage/stowage/storage/usage"
)

// Shared is the usage and access bookkeeping the replicas of one cache
// share (proxy/cluster keeps it in Redis). Every replica applies its
// commits, removals and accesses in batches; the replica holding the
// eviction lease decides from it. Every call is bounded in time by the
// implementation.
type Shared interface {
	// Apply records a batch of this replica's changes, idempotently, and
	// returns the cluster's totals.
	Apply(ctx context.Context, c Changes) (Totals, error)
	// Totals returns the cluster's totals.
	Totals(ctx context.Context) (Totals, error)
	// Oldest returns up to n blobs (manifests excluded) whose last use by
	// any replica is at or before until, least recently used first,
	// skipping the first offset of them.
	Oldest(ctx context.Context, until time.Time, offset, n int) ([]usage.Blob, error)
	// LastUsed returns when d was last used by any replica (or cached),
	// and whether it is known.
	LastUsed(ctx context.Context, d digest.Digest) (time.Time, bool, error)
	// Remove drops d (evicted).
	Remove(ctx context.Context, d digest.Digest) error
	// Reconcile makes the shared view agree with blobs, the result of a
	// walk of the storage that started at started: it adds what is
	// missing, drops what was known before started but is not in blobs,
	// recounts the totals and marks the view seeded.
	Reconcile(ctx context.Context, started time.Time, blobs []usage.Blob) error
}

// Changes is one batch of a replica's bookkeeping.
type Changes struct {
	// Added are committed blobs and stored manifests (Cached = commit time).
	Added []usage.Blob
	// Removed are blobs gone from the cache.
	Removed []digest.Digest
	// Touched are accesses (the latest per digest).
	Touched map[digest.Digest]time.Time
	// Lost: changes were dropped (the store was unreachable too long):
	// the shared view must be rebuilt from the storage.
	Lost bool
}

func (c Changes) empty() bool {
	return len(c.Added) == 0 && len(c.Removed) == 0 && len(c.Touched) == 0 && !c.Lost
}

// Totals are the cluster's usage.
type Totals struct {
	Bytes   int64
	Objects int64
	// Seeded is false until a leader reconciled the view with the storage
	// (first start, or after Redis lost its data): passes wait for it.
	Seeded bool
}

// InUseLister is implemented by a proxy that can list the blobs it is
// serving or filling (*proxy.Proxy). With a cluster, they are reported as
// used at every sync, so that no replica evicts what another one serves.
type InUseLister interface {
	BlobsInUse() []digest.Digest
}

// DefaultSyncInterval is how often a replica applies its batched changes
// to the shared view. It must stay well below cache.evict_grace (at least
// a minute): a blob served on one replica is protected on the others by
// its access time, which reaches them this late at most.
const DefaultSyncInterval = 5 * time.Second

// maxPending bounds the changes kept while the shared view is unreachable;
// past it they are dropped and the next leader rebuilds the view.
const maxPending = 200_000

// WithCluster shares the engine's bookkeeping with the other replicas of
// the cache: sh holds usage and access times, ld says which replica runs
// the passes (Run runs it). sync is how often changes are applied (0:
// DefaultSyncInterval).
func WithCluster(ld *lead.Lead, sh Shared, sync time.Duration) Option {
	return func(e *Engine) {
		e.lead, e.shared, e.syncInterval = ld, sh, sync
		if e.syncInterval == 0 {
			e.syncInterval = DefaultSyncInterval
		}
	}
}

// pending are the changes not yet applied to the shared view.
type pending struct {
	added   map[digest.Digest]usage.Blob
	removed map[digest.Digest]bool
	touched map[digest.Digest]time.Time
	lost    bool
}

func newPending() pending {
	return pending{added: map[digest.Digest]usage.Blob{}, removed: map[digest.Digest]bool{}, touched: map[digest.Digest]time.Time{}}
}

func (p *pending) size() int { return len(p.added) + len(p.removed) + len(p.touched) }

// note records a change for the shared view (nothing without a cluster).
func (e *Engine) note(f func(p *pending)) {
	if e.shared == nil {
		return
	}
	e.pmu.Lock()
	defer e.pmu.Unlock()
	f(&e.pending)
	if e.pending.size() > maxPending {
		e.pending = newPending()
		e.pending.lost = true
	}
}

func (e *Engine) noteAdded(d digest.Digest, size int64, manifest bool) {
	now := e.now()
	e.note(func(p *pending) {
		delete(p.removed, d)
		if old, ok := p.added[d]; ok {
			manifest = manifest || old.Manifest
		}
		p.added[d] = usage.Blob{Digest: d, Size: size, Cached: now, LastUsed: now, Manifest: manifest}
	})
}

func (e *Engine) noteTouched(d digest.Digest) {
	now := e.now()
	e.note(func(p *pending) { p.touched[d] = now })
}

func (e *Engine) noteRemoved(d digest.Digest) {
	e.note(func(p *pending) {
		delete(p.added, d)
		delete(p.touched, d)
		p.removed[d] = true
	})
}

// takeChanges returns the pending changes (and the blobs in use, as
// touched now) and clears them.
func (e *Engine) takeChanges() Changes {
	e.pmu.Lock()
	p := e.pending
	e.pending = newPending()
	e.pmu.Unlock()
	c := Changes{Touched: p.touched, Lost: p.lost}
	for _, b := range p.added {
		c.Added = append(c.Added, b)
	}
	for d := range p.removed {
		c.Removed = append(c.Removed, d)
	}
	if l, ok := e.inUse.(InUseLister); ok {
		now := e.now()
		for _, d := range l.BlobsInUse() {
			if !p.removed[d] {
				c.Touched[d] = now
			}
		}
	}
	return c
}

// putBack returns changes that could not be applied; newer ones win.
func (e *Engine) putBack(c Changes) {
	e.note(func(p *pending) {
		p.lost = p.lost || c.Lost
		for _, d := range c.Removed {
			if _, again := p.added[d]; !again {
				p.removed[d] = true
			}
		}
		for _, b := range c.Added {
			if _, ok := p.added[b.Digest]; !ok && !p.removed[b.Digest] {
				p.added[b.Digest] = b
			}
		}
		for d, t := range c.Touched {
			if t.After(p.touched[d]) && !p.removed[d] {
				p.touched[d] = t
			}
		}
	})
}

// sync applies the pending changes to the shared view. As the leader it
// then seeds the view if nobody has, and runs a pass when the cluster's
// usage is over the cap.
func (e *Engine) sync(ctx context.Context) {
	if err := e.flush(ctx); err != nil {
		return // logged once by the lease store's breaker; Lead goes Local
	}
	if e.lead.Role() != lead.Leader {
		return
	}
	tot := e.totals()
	if !tot.Seeded {
		e.seed(ctx)
		return
	}
	if e.policy.MaxSize > 0 && tot.Bytes > e.policy.MaxSize {
		e.runPass(ctx, false)
	}
}

// flush applies the pending changes and keeps the returned totals.
func (e *Engine) flush(ctx context.Context) error {
	c := e.takeChanges()
	var (
		tot Totals
		err error
	)
	if c.empty() {
		tot, err = e.shared.Totals(ctx)
	} else {
		tot, err = e.shared.Apply(ctx, c)
	}
	if err != nil {
		e.putBack(c)
		return err
	}
	e.pmu.Lock()
	e.sharedTotals, e.syncedAt = tot, e.now()
	e.pmu.Unlock()
	return nil
}

func (e *Engine) totals() Totals {
	e.pmu.Lock()
	defer e.pmu.Unlock()
	return e.sharedTotals
}

// seed rebuilds the local index from the storage and makes the shared view
// agree with it (the leader, when the view is new or was lost).
func (e *Engine) seed(ctx context.Context) {
	started := e.now()
	if err := e.index.Rebuild(ctx, e.store); err != nil {
		if ctx.Err() == nil {
			e.log.Warn("rebuilding the usage index for the cluster", "err", err)
		}
		return
	}
	e.reconcile(ctx, started)
}

// reconcile makes the shared view agree with the index, freshly rebuilt
// by a walk that started at started.
func (e *Engine) reconcile(ctx context.Context, started time.Time) {
	if err := e.shared.Reconcile(ctx, started, e.index.Snapshot()); err != nil {
		if ctx.Err() == nil {
			e.log.Warn("reconciling the cluster's usage with the storage", "err", err)
		}
		return
	}
	if err := e.flush(ctx); err == nil {
		tot := e.totals()
		e.log.Info("cluster usage reconciled with the storage", "bytes", tot.Bytes, "objects", tot.Objects)
	}
}

// Usage returns the cache's usage: the cluster's when this replica shares
// it (and has synced recently), else the local index's.
func (e *Engine) Usage() (bytes int64, objects int) {
	if e.shared != nil {
		e.pmu.Lock()
		tot, at := e.sharedTotals, e.syncedAt
		e.pmu.Unlock()
		if tot.Seeded && e.now().Sub(at) < 3*e.syncInterval {
			return tot.Bytes, int(tot.Objects)
		}
	}
	return e.index.Usage()
}

// errLostLease stops a pass whose replica no longer holds the lease.
var errLostLease = errors.New("evict: the eviction lease was lost during the pass")

// view is what a pass reads: the local index, or the shared view.
type view interface {
	// usage is the bytes the cap applies to.
	usage(ctx context.Context) (int64, error)
	// next returns the next candidate (not a manifest, last used at or
	// before until), least recently used first; ok is false at the end.
	next(ctx context.Context) (b usage.Blob, ok bool, err error)
	// stillUnused reports whether b was not used since the view read it.
	stillUnused(ctx context.Context, b usage.Blob) (bool, error)
	// removed records b's eviction.
	removed(ctx context.Context, d digest.Digest) error
	// mayRemove reports whether this replica may still evict.
	mayRemove() error
}

// localView is the engine's own index.
type localView struct {
	x     *usage.Index
	note  func(digest.Digest) // tells the shared view, when there is one
	until time.Time
	snap  []usage.Blob
	i     int
}

func (v *localView) usage(context.Context) (int64, error) { b, _ := v.x.Usage(); return b, nil }

func (v *localView) next(context.Context) (usage.Blob, bool, error) {
	if v.snap == nil {
		v.snap = v.x.Snapshot()
	}
	for v.i < len(v.snap) {
		b := v.snap[v.i]
		v.i++
		if b.LastUsed.After(v.until) {
			return usage.Blob{}, false, nil // sorted: the rest is younger
		}
		if !b.Manifest {
			return b, true, nil
		}
	}
	return usage.Blob{}, false, nil
}

func (v *localView) stillUnused(_ context.Context, b usage.Blob) (bool, error) {
	last, ok := v.x.LastUsed(b.Digest)
	return ok && !last.After(b.LastUsed), nil
}

func (v *localView) removed(_ context.Context, d digest.Digest) error {
	v.x.Removed(d)
	v.note(d)
	return nil
}

func (v *localView) mayRemove() error { return nil }

// sharedView is the cluster's view, read in pages.
type sharedView struct {
	e     *Engine
	until time.Time
	page  []usage.Blob
	off   int // entries of the range known to stay (skipped)
	seen  int
	limit int // bounds the walk even when entries move meanwhile
}

const pageSize = 256

func (v *sharedView) usage(ctx context.Context) (int64, error) {
	tot, err := v.e.shared.Totals(ctx)
	if err != nil {
		return 0, err
	}
	if !tot.Seeded {
		return 0, errors.New("evict: the cluster's usage is not seeded yet")
	}
	v.limit = int(tot.Objects) + pageSize
	return tot.Bytes, nil
}

func (v *sharedView) next(ctx context.Context) (usage.Blob, bool, error) {
	if v.seen >= v.limit {
		return usage.Blob{}, false, nil
	}
	if len(v.page) == 0 {
		var err error
		if v.page, err = v.e.shared.Oldest(ctx, v.until, v.off, pageSize); err != nil || len(v.page) == 0 {
			return usage.Blob{}, false, err
		}
		// Every entry counts as kept until removed says otherwise.
		v.off += len(v.page)
	}
	b := v.page[0]
	v.page = v.page[1:]
	v.seen++
	return b, true, nil
}

func (v *sharedView) stillUnused(ctx context.Context, b usage.Blob) (bool, error) {
	last, ok, err := v.e.shared.LastUsed(ctx, b.Digest)
	if err != nil {
		return false, err
	}
	if l, lok := v.e.index.LastUsed(b.Digest); lok && l.Unix() > last.Unix() {
		last = l // this replica's own hits not yet synced
	}
	// The shared view keeps whole seconds.
	return ok && last.Unix() <= b.LastUsed.Unix(), nil
}

func (v *sharedView) removed(ctx context.Context, d digest.Digest) error {
	v.off--
	v.e.index.Removed(d)
	return v.e.shared.Remove(ctx, d)
}

func (v *sharedView) mayRemove() error {
	if v.e.lead.Role() != lead.Leader {
		return errLostLease
	}
	return nil
}

// Role returns this replica's part in the cluster's eviction (lead.Local
// without a cluster).
func (e *Engine) Role() lead.Role {
	if e.lead == nil {
		return lead.Local
	}
	return e.lead.Role()
}
