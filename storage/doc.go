// Package storage is Stowage's cache store: manifests, blobs, tag links with
// their fetched-at times and cached referrers, kept on a distribution storage
// driver (filesystem by default) in the distribution registry's own layout
// (docker/registry/v2/...), so a stock registry pointed at the same root
// serves the cached images and content a stock registry wrote is served by
// Stowage.
//
// Every write is atomic (write, then move into place), and on the
// filesystem driver the move is synced before it returns. Blobs arrive
// through a Staging file that a fill writes while hashing and commits only
// after the digest and size were verified. A Store treats a missing object
// as ErrNotFound and every other error as a failure, never as a miss.
//
// Several processes may share one root: each filesystem Store owns a
// staging directory (stowage/staging/<instance>/, locked with flock while
// the Store is open), and CleanStaging at start-up removes only what dead
// owners left; Orphan hands a dead owner's partial download of a blob to
// the replica that takes its fill over. BlobStore, ManifestStore, TagStore and RecordStore are small
// views of a Store for callers and tests; storagetest holds the conformance
// suite every backend passes and a fault-injecting driver.
package storage
