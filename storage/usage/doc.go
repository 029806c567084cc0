// Package usage keeps the cache's usage index: every committed blob with
// its size, when it was cached and when it was last used, in memory, so
// that an eviction decision never needs a scan of the cache.
//
// The index is rebuilt in the background at start (a walk of blobs/ and
// of the repositories' manifest revisions) while the server already
// serves, and kept current by the notifications the proxy sends: Added
// and ManifestAdded on commit, Touched on every hit, Removed when
// something else deletes a blob. Last-access times live in memory and are
// persisted in batches by an AccessLog (one small record per interval
// under the store's stowage/access/ directory), never with a write per
// hit; they are restored at start and read by "proxy gc". Replicas of one
// cache also share their usage and access times through Redis (see
// storage/evict's Shared); this index stays each replica's own view, used
// without Redis or while it fails.
//
// Pulls counts pulls (manifest GETs answered 200) per cache repository
// the same way: in memory per pull, one small delta file per interval
// under stowage/pulls/, restored at start, merged across the processes
// sharing the store and compacted into snapshots without ever counting a
// delta twice (pullfiles.go). "proxy stats" reads them with LoadPulls.
package usage
