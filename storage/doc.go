// Package storage is Stowage's cache store: manifests, blobs, tag links with
// their fetched-at times and cached referrers, kept on a distribution storage
// driver (filesystem by default) in the distribution registry's own layout
// (docker/registry/v2/...), so a stock registry pointed at the same root
// serves the cached images and content a stock registry wrote is served by
// Stowage.
//
// Every write is atomic (write, then move into place). Blobs arrive through a
// Staging file that a fill writes while hashing and commits only after the
// digest and size were verified. A Store treats a missing object as
// ErrNotFound and every other error as a failure, never as a miss.
package storage
