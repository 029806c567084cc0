package bundle

import (
	"regexp"
	"strings"

	"github.com/opencontainers/go-digest"

	"github.com/stowage/stowage/storage"
)

// The distribution registry's layout, relative to the root (tar entry
// names), from the store's own path functions.

// v2Root is the top of the layout a bundle may contain.
const v2Root = "docker/registry/v2"

func rel(p string) string { return strings.TrimPrefix(p, "/") }

func blobPath(d digest.Digest) string { return rel(storage.BlobDataPath(d)) }

func revisionPath(repo string, d digest.Digest) string { return rel(storage.RevisionLinkPath(repo, d)) }

func tagCurrentPath(repo, tag string) string { return rel(storage.TagCurrentLinkPath(repo, tag)) }

func tagIndexPath(repo, tag string, d digest.Digest) string {
	return rel(storage.TagIndexLinkPath(repo, tag, d))
}

func tagFetchedPath(repo, tag string) string { return rel(storage.TagFetchedPath(repo, tag)) }

func layerPath(repo string, d digest.Digest) string { return rel(storage.LayerLinkPath(repo, d)) }

// Entry patterns an import accepts. Repository names are checked with the
// reference grammar afterwards.
var (
	reBlob     = regexp.MustCompile(`^docker/registry/v2/blobs/sha256/([0-9a-f]{2})/([0-9a-f]{64})/data$`)
	reRevision = regexp.MustCompile(`^docker/registry/v2/repositories/(.+)/_manifests/revisions/sha256/([0-9a-f]{64})/link$`)
	reTagCur   = regexp.MustCompile(`^docker/registry/v2/repositories/(.+)/_manifests/tags/([^/]+)/current/link$`)
	reTagIndex = regexp.MustCompile(`^docker/registry/v2/repositories/(.+)/_manifests/tags/([^/]+)/index/sha256/([0-9a-f]{64})/link$`)
	reTagTime  = regexp.MustCompile(`^docker/registry/v2/repositories/(.+)/_manifests/tags/([^/]+)/stowage_fetched_at$`)
	reLayer    = regexp.MustCompile(`^docker/registry/v2/repositories/(.+)/_layers/sha256/([0-9a-f]{64})/link$`)
)
