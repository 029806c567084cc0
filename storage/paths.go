package storage

import (
	"path"

	"github.com/opencontainers/go-digest"
)

// The distribution registry's layout, so that a stock registry pointed at the
// same root serves what Stowage cached and the other way round.
const (
	v2Root     = "/docker/registry/v2"
	reposRoot  = v2Root + "/repositories"
	blobsRoot  = v2Root + "/blobs"
	ownRoot    = "/stowage"
	stagingDir = ownRoot + "/staging"
	refsRoot   = ownRoot + "/referrers"
)

func blobDataPath(d digest.Digest) string {
	hex := d.Encoded()
	return path.Join(blobsRoot, d.Algorithm().String(), hex[:2], hex, "data")
}

func layerLinkPath(repo string, d digest.Digest) string {
	return path.Join(reposRoot, repo, "_layers", d.Algorithm().String(), d.Encoded(), "link")
}

func revisionLinkPath(repo string, d digest.Digest) string {
	return path.Join(reposRoot, repo, "_manifests/revisions", d.Algorithm().String(), d.Encoded(), "link")
}

func tagsPath(repo string) string {
	return path.Join(reposRoot, repo, "_manifests/tags")
}

func tagCurrentLinkPath(repo, tag string) string {
	return path.Join(tagsPath(repo), tag, "current/link")
}

func tagIndexLinkPath(repo, tag string, d digest.Digest) string {
	return path.Join(tagsPath(repo), tag, "index", d.Algorithm().String(), d.Encoded(), "link")
}

// tagFetchedPath holds Stowage's fetched-at time of a tag. It sits inside the
// tag directory, where a stock registry ignores it.
func tagFetchedPath(repo, tag string) string {
	return path.Join(tagsPath(repo), tag, "stowage_fetched_at")
}

func referrersPath(repo string, d digest.Digest, key string) string {
	return path.Join(refsRoot, repo, d.Algorithm().String(), d.Encoded(), key)
}

// The layout's paths, exported for tools that read or write the registry
// layout as files (bundle export/import). Driver paths: absolute, with a
// leading slash, relative to the storage root.

// BlobDataPath is where a blob's bytes live.
func BlobDataPath(d digest.Digest) string { return blobDataPath(d) }

// LayerLinkPath links a blob into a repository.
func LayerLinkPath(repo string, d digest.Digest) string { return layerLinkPath(repo, d) }

// RevisionLinkPath links a manifest into a repository.
func RevisionLinkPath(repo string, d digest.Digest) string { return revisionLinkPath(repo, d) }

// TagFetchedPath holds a tag's fetched-at time (RFC 3339).
func TagFetchedPath(repo, tag string) string { return tagFetchedPath(repo, tag) }

// TagCurrentLinkPath points a tag at its manifest.
func TagCurrentLinkPath(repo, tag string) string { return tagCurrentLinkPath(repo, tag) }

// TagIndexLinkPath records a manifest a tag has pointed at.
func TagIndexLinkPath(repo, tag string, d digest.Digest) string {
	return tagIndexLinkPath(repo, tag, d)
}
