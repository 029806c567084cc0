package main

import (
	"context"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/stowage/stowage/config"
	"github.com/stowage/stowage/storage"
	"github.com/stowage/stowage/storage/evict"
)

// Seams between the eviction engine and the proxy. The proxy opts in by
// growing these methods; serve wires whatever it implements:
//
//   - InUse(d digest.Digest) bool (evict.InUse): blobs being filled or
//     served are never evicted;
//   - SetCacheHooks(evict.Hooks): the proxy then calls Added after a blob
//     commit, ManifestAdded after storing a manifest, Touched on every
//     cache hit (blob or manifest), Removed when it deletes a blob itself
//     (a corrupt one), and Trigger when a write fails for lack of space.
type cacheHooksSetter interface {
	SetCacheHooks(evict.Hooks)
}

// newEvictionEngine builds the engine for cfg's cache policy over store.
// p is the proxy, wired through the seams above when it implements them.
// The engine also runs sweep (the tree-walking half of the start-up
// cleanup) in the background, before it builds its index.
func newEvictionEngine(cfg *config.Config, log *slog.Logger, reg prometheus.Registerer, store *storage.Store, p any) (*evict.Engine, error) {
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
	if u, ok := p.(evict.InUse); ok {
		opts = append(opts, evict.WithInUse(u))
	}
	eng, err := evict.New(store, policy, opts...)
	if err != nil {
		return nil, err
	}
	if h, ok := p.(cacheHooksSetter); ok {
		h.SetCacheHooks(eng)
	}
	return eng, nil
}

// cleanStagingDirs is the synchronous, cheap part of the start-up cleanup
// for serve: dead processes' staging directories. The tree walk for old
// temporary files runs in the background (newEvictionEngine).
func cleanStagingDirs(ctx context.Context, store *storage.Store, log *slog.Logger) {
	if err := store.CleanStagingDirs(ctx); err != nil {
		log.Warn("cleaning leftovers of interrupted fills", "err", err)
	}
}
