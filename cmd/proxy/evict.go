package main

import (
	"context"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/stowage/stowage/config"
	"github.com/stowage/stowage/proxy"
	"github.com/stowage/stowage/storage"
	"github.com/stowage/stowage/storage/evict"
)

// newEvictionEngine builds the engine for cfg's cache policy over store.
// The proxy keeps the engine's usage index current (proxy.CacheHooks) and
// tells it which blobs are being filled or served (never evicted).
// The engine also runs sweep (the tree-walking half of the start-up
// cleanup) in the background, before it builds its index.
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
