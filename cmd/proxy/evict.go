package main

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/stowage/stowage/config"
	"github.com/stowage/stowage/proxy"
	"github.com/stowage/stowage/proxy/cluster"
	"github.com/stowage/stowage/storage"
	"github.com/stowage/stowage/storage/evict"
	"github.com/stowage/stowage/storage/evict/lead"
)

// evictLeaseTTL is how long the eviction lease outlives its holder: a
// replica that dies is replaced as the cluster's evictor this late.
const evictLeaseTTL = 15 * time.Second

// newEvictionEngine builds the engine for cfg's cache policy over store.
// The proxy keeps the engine's usage index current (proxy.CacheHooks) and
// tells it which blobs are being filled or served (never evicted).
// The engine also runs sweep (the tree-walking half of the start-up
// cleanup) in the background, before it builds its index.
//
// With Redis, the replicas share the bookkeeping (usage and access times)
// and one at a time, the holder of the eviction lease, runs the passes;
// through the fill coordinator's client and circuit breaker, so a failing
// Redis makes each replica evict over its own view, as without Redis.
func newEvictionEngine(cfg *config.Config, log *slog.Logger, reg prometheus.Registerer, store *storage.Store, p *proxy.Proxy) (*evict.Engine, error) {
	policy := evict.Policy{
		MaxSize:    int64(cfg.Cache.MaxSize),
		EvictAfter: cfg.Cache.EvictAfter.Std(),
		Grace:      cfg.Cache.EvictGrace,
	}
	opts := []evict.Option{
		evict.WithLogger(log.With("component", "evict")),
		evict.WithRegisterer(reg),
		evict.WithStartupTask(store.SweepTemps),
	}
	if root := store.Root(); root != "" {
		opts = append(opts, evict.WithDiskSpace(evict.Statfs(root)))
		if mf := cfg.Cache.MinFree; mf.Percent > 0 || mf.Bytes > 0 {
			policy.MinFree = mf.Of
		}
	}
	opts = append(opts, evict.WithInUse(p))
	if cfg.Redis.Addr != "" {
		leases, ok := p.Coordinator().(*cluster.RedisLeases)
		if !ok {
			return nil, errors.New("evict: sharing eviction needs the Redis fill coordinator")
		}
		shared, err := cluster.NewRedisEvict(leases)
		if err != nil {
			return nil, err
		}
		ld, err := lead.New(shared, evictLeaseTTL, lead.WithLogger(log.With("component", "evict")))
		if err != nil {
			return nil, err
		}
		opts = append(opts, evict.WithCluster(ld, shared, 0))
	}
	eng, err := evict.New(store, policy, opts...)
	if err != nil {
		return nil, err
	}
	p.SetCacheHooks(eng)
	return eng, nil
}

// cleanStagingDirs is the synchronous, cheap part of the start-up cleanup
// for serve: dead processes' staging directories, except those written to
// within storage.OrphanGrace, whose partial downloads another replica may
// still adopt (serve repeats the pass, see cleanOrphansPeriodically). The
// tree walk for old temporary files runs in the background
// (newEvictionEngine).
func cleanStagingDirs(ctx context.Context, store *storage.Store, log *slog.Logger) {
	if err := store.CleanStagingDirsKeeping(ctx, storage.OrphanGrace); err != nil {
		log.Warn("cleaning leftovers of interrupted fills", "err", err)
	}
}
