// Package evict keeps the cache within its size cap and its filesystem's
// free-space floor, and removes content unused for too long.
//
// An Engine owns a usage.Index and runs passes. A pass starts when usage
// passes the cap (the high watermark: cache.max_size), when free space
// falls below cache.min_free, on Trigger (a write failed for lack of
// space), and once per interval (for cache.evict_after). It evicts least
// recently used blobs first until usage is at most the low watermark
// (LowWatermark, 90%, of the cap) and free space is at least min_free plus
// a tenth of it. It never evicts:
//
//   - manifests (tiny; a manifest whose blobs are gone stays servable and
//     its blobs refetch on demand);
//   - pinned content (the pins prefetch lists write: every manifest and
//     blob of a pinned image);
//   - blobs the proxy reports in use (being filled or served);
//   - anything used or cached within the grace period (cache.evict_grace).
//
// Evicting a blob removes the repositories' _layers links to it first, in
// the same pass, so a stock registry on the same root stays consistent.
//
// Replicas sharing one storage share the bookkeeping too (WithCluster): each
// applies its commits, removals and hits, and the blobs it is serving, to a
// Shared view (Redis, in proxy/cluster) every sync interval, never once per
// hit; the replica holding the eviction lease (package lead) runs the
// passes over that view, least recently used by any replica first; the
// others skip theirs and ask the holder for one when they need room. When
// the lease store fails, each replica evicts over its own index again.
package evict
