package evict

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/stowage/stowage/storage"
	"github.com/stowage/stowage/storage/evict/lead"
	"github.com/stowage/stowage/storage/recent"
	"github.com/stowage/stowage/storage/usage"
)

// LowWatermark is the share of the cap a size-triggered pass brings usage
// down to, so that eviction runs in batches rather than at every commit.
const LowWatermark = 0.9

// Reasons a blob is evicted, as the metrics label them.
const (
	ReasonSize      = "size"       // usage passed cache.max_size
	ReasonFreeSpace = "free_space" // free space fell below cache.min_free
	ReasonAge       = "age"        // unused for cache.evict_after
)

// Store is what the engine needs of the cache. *storage.Store satisfies
// it.
type Store interface {
	usage.Source
	usage.Records
	RemoveBlob(ctx context.Context, d digest.Digest, repos []string) (int, error)
	PinnedBlobs(ctx context.Context) (map[digest.Digest]bool, error)
}

// InUse is implemented by the proxy: it reports whether a blob is being
// filled or served right now.
type InUse interface {
	InUse(d digest.Digest) bool
}

// Hooks are the notifications the proxy sends; *Engine implements them.
// Every method is cheap and never blocks on I/O.
type Hooks interface {
	// Added: a blob was committed (size in bytes).
	Added(d digest.Digest, size int64)
	// ManifestAdded: manifest bytes were stored.
	ManifestAdded(d digest.Digest, size int64)
	// Touched: a blob or manifest was served from the cache.
	Touched(d digest.Digest)
	// Removed: a blob was deleted by something other than the engine.
	Removed(d digest.Digest)
	// Trigger: run a pass now (e.g. a write failed with ENOSPC).
	Trigger()
}

// DiskSpace reports the total and available bytes of the cache's
// filesystem.
type DiskSpace func() (total, free uint64, err error)

// Policy is what to keep. The zero value never evicts.
type Policy struct {
	// MaxSize caps usage in bytes; 0 = no cap.
	MaxSize int64
	// MinFree is the free space to keep, given the filesystem's total; nil
	// = no floor.
	MinFree func(total uint64) uint64
	// EvictAfter evicts blobs unused this long; 0 = never.
	EvictAfter time.Duration
	// Grace protects blobs used or cached this recently.
	Grace time.Duration
}

// Engine is the eviction engine. Create it with New and run it with Run.
type Engine struct {
	store   Store
	index   *usage.Index
	access  *usage.AccessLog
	policy  Policy
	inUse   InUse
	disk    DiskSpace
	log     *slog.Logger
	metrics *metrics
	now     func() time.Time

	interval        time.Duration
	persistInterval time.Duration
	rescanInterval  time.Duration
	background      []func(context.Context) error

	trigger chan struct{}
	// urgent is set by Trigger: a follower asks the leader for a pass.
	urgent atomic.Bool
	recent *recent.Ring[Eviction]

	// With a cluster (WithCluster): the lease, the shared view, and the
	// changes not yet applied to it.
	lead         *lead.Lead
	shared       Shared
	syncInterval time.Duration
	pmu          sync.Mutex
	pending      pending
	sharedTotals Totals
	syncedAt     time.Time
	requestedAt  time.Time // last request to the leader (rate-limited)
	// short is set while passes cannot free what they need.
	short bool
	// afterPass, when set, sees every pass's result (tests).
	afterPass func(PassResult, error)
}

// Option configures an Engine.
type Option func(*Engine)

// WithInUse sets what reports blobs being filled or served.
func WithInUse(u InUse) Option { return func(e *Engine) { e.inUse = u } }

// WithDiskSpace sets how free space is measured (statfs of the root by
// default on a filesystem store; required for MinFree otherwise).
func WithDiskSpace(f DiskSpace) Option { return func(e *Engine) { e.disk = f } }

// WithLogger sets the logger.
func WithLogger(l *slog.Logger) Option { return func(e *Engine) { e.log = l } }

// WithRegisterer registers the engine's metrics.
func WithRegisterer(r prometheus.Registerer) Option {
	return func(e *Engine) { e.metrics.reg = r }
}

// WithIntervals sets how often a pass runs unprompted, how often access
// times are persisted, and how often the index is rebuilt from the disk
// (which corrects it for what other processes wrote). Defaults: 1m, 1m,
// 6h.
func WithIntervals(pass, persist, rescan time.Duration) Option {
	return func(e *Engine) { e.interval, e.persistInterval, e.rescanInterval = pass, persist, rescan }
}

// WithStartupTask runs f in the background at start, before the first
// index rebuild (the server's sweep of old temporary files).
func WithStartupTask(f func(context.Context) error) Option {
	return func(e *Engine) { e.background = append(e.background, f) }
}

// New builds an engine over store with policy p.
func New(store Store, p Policy, opts ...Option) (*Engine, error) {
	if store == nil {
		return nil, errors.New("evict: nil store")
	}
	if p.MaxSize < 0 || p.EvictAfter < 0 || p.Grace < 0 {
		return nil, errors.New("evict: negative size or duration")
	}
	e := &Engine{
		recent:          recent.New[Eviction](RecentLimit),
		store:           store,
		policy:          p,
		log:             slog.New(slog.DiscardHandler),
		metrics:         &metrics{},
		now:             time.Now,
		interval:        time.Minute,
		persistInterval: time.Minute,
		rescanInterval:  6 * time.Hour,
		trigger:         make(chan struct{}, 1),
		pending:         newPending(),
	}
	for _, o := range opts {
		o(e)
	}
	if e.interval <= 0 || e.persistInterval <= 0 || e.rescanInterval <= 0 {
		return nil, errors.New("evict: intervals must be positive")
	}
	if (e.lead == nil) != (e.shared == nil) {
		return nil, errors.New("evict: a cluster needs both a lead and a shared view")
	}
	if e.shared != nil && (e.syncInterval <= 0 || (p.Grace > 0 && e.syncInterval*4 > p.Grace)) {
		return nil, errors.New("evict: the cluster sync interval must be positive and well below the grace period")
	}
	if p.MinFree != nil && e.disk == nil {
		return nil, errors.New("evict: min_free needs a way to measure free space")
	}
	e.index = usage.New(e.now)
	e.access = usage.NewAccessLog(store, e.index)
	if err := e.metrics.register(e); err != nil {
		return nil, err
	}
	return e, nil
}

// Index returns the engine's usage index.
func (e *Engine) Index() *usage.Index { return e.index }

// Added implements Hooks.
func (e *Engine) Added(d digest.Digest, size int64) {
	e.index.Added(d, size)
	e.noteAdded(d, size, false)
	e.triggerIfOver()
}

// ManifestAdded implements Hooks.
func (e *Engine) ManifestAdded(d digest.Digest, size int64) {
	e.index.ManifestAdded(d, size)
	e.noteAdded(d, size, true)
	e.triggerIfOver()
}

// Touched implements Hooks.
func (e *Engine) Touched(d digest.Digest) {
	e.index.Touched(d)
	e.noteTouched(d)
}

// Removed implements Hooks.
func (e *Engine) Removed(d digest.Digest) {
	e.index.Removed(d)
	e.noteRemoved(d)
}

// Trigger implements Hooks: a pass runs as soon as the engine is free.
// In a cluster, a replica that does not hold the eviction lease asks the
// holder for one instead (or runs it itself when the lease store is
// unavailable).
func (e *Engine) Trigger() {
	e.urgent.Store(true)
	e.poke()
}

func (e *Engine) poke() {
	select {
	case e.trigger <- struct{}{}:
	default: // one is pending already
	}
}

func (e *Engine) triggerIfOver() {
	// In a cluster the leader checks the cluster's usage at every sync.
	if e.policy.MaxSize == 0 || e.shared != nil {
		return
	}
	if used, _ := e.index.Usage(); used > e.policy.MaxSize {
		e.poke()
	}
}

var _ Hooks = (*Engine)(nil)

// Run rebuilds the index in the background and then keeps the cache within
// its policy until ctx ends; it returns nil then, after persisting the
// access times. It never blocks start-up: serving goes on while the index
// is built, and passes wait for it.
//
// With a cluster (WithCluster) it also runs the lease, applies this
// replica's changes to the shared view every sync interval, and runs
// passes only as the leader (or when the lease store is unavailable).
func (e *Engine) Run(ctx context.Context) error {
	var (
		wg    sync.WaitGroup
		syncC <-chan time.Time
		wake  <-chan struct{}
	)
	if e.lead != nil {
		lctx, stopLead := context.WithCancel(ctx)
		wg.Go(func() { _ = e.lead.Run(lctx) })
		// The lease is released when Run returns (after the last pass).
		defer wg.Wait()
		defer stopLead()
		t := time.NewTicker(e.syncInterval)
		defer t.Stop()
		syncC, wake = t.C, e.lead.Wake()
	}
	e.startup(ctx)
	pass := time.NewTicker(e.interval)
	defer pass.Stop()
	persist := time.NewTicker(e.persistInterval)
	defer persist.Stop()
	rescan := time.NewTicker(e.rescanInterval)
	defer rescan.Stop()
	for {
		select {
		case <-ctx.Done():
			e.saveAtShutdown(ctx)
			return nil
		case <-e.trigger:
			e.runPass(ctx, e.urgent.Swap(false))
		case <-wake:
			e.runPass(ctx, false)
		case <-pass.C:
			e.runPass(ctx, false)
		case <-syncC:
			e.sync(ctx)
		case <-persist.C:
			if err := e.access.Save(ctx); err != nil && ctx.Err() == nil {
				e.log.Warn("saving access times", "err", err)
			}
		case <-rescan.C:
			e.rescan(ctx)
		}
	}
}

// rescan rebuilds the index from the storage; the leader of a cluster then
// reconciles the shared view with it.
func (e *Engine) rescan(ctx context.Context) {
	started := e.now()
	if err := e.index.Rebuild(ctx, e.store); err != nil {
		if ctx.Err() == nil {
			e.log.Warn("rebuilding the usage index", "err", err)
		}
		return
	}
	if e.lead != nil && e.lead.Role() == lead.Leader {
		e.reconcile(ctx, started)
	}
}

// saveAtShutdown persists the last accesses (and, in a cluster, applies
// the last changes to the shared view), on a short deadline of its own
// (ctx has ended).
func (e *Engine) saveAtShutdown(ctx context.Context) {
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := e.access.Save(sctx); err != nil {
		e.log.Warn("saving access times at shutdown", "err", err)
	}
	if e.shared != nil {
		if err := e.flush(sctx); err != nil {
			e.log.Warn("applying the last changes to the cluster's usage at shutdown", "err", err)
		}
	}
}

// startup runs the start-up tasks, restores access times and builds the
// index. A failed rebuild is retried by the rescan ticker; until then no
// pass runs.
func (e *Engine) startup(ctx context.Context) {
	start := e.now()
	for _, f := range e.background {
		if err := f(ctx); err != nil && ctx.Err() == nil {
			e.log.Warn("start-up cleanup", "err", err)
		}
	}
	if err := e.access.Restore(ctx); err != nil && ctx.Err() == nil {
		e.log.Warn("restoring access times", "err", err)
	}
	if err := e.index.Rebuild(ctx, e.store); err != nil {
		if ctx.Err() == nil {
			e.log.Warn("building the usage index", "err", err)
		}
		return
	}
	bytes, objects := e.index.Usage()
	e.log.Info("usage index ready", "bytes", bytes, "objects", objects, "took", e.now().Sub(start).String())
	e.poke()
}

var _ Store = (*storage.Store)(nil)
