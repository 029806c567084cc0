package storage

import (
	"context"
	"io"
	"time"

	"github.com/opencontainers/go-digest"
)

// Small views of a Store, so that a caller can depend on only what it uses
// and a test can wrap one (count calls, fail one operation, slow one down)
// without a fake of the whole store. *Store satisfies every one of them.

// BlobStore is the blob side of the cache: staging and committing fills,
// serving, and per-repository links.
type BlobStore interface {
	NewStaging(d digest.Digest) (*Staging, error)
	CommitBlob(ctx context.Context, d digest.Digest, st *Staging) error
	StatBlob(ctx context.Context, d digest.Digest) (BlobInfo, error)
	OpenBlob(ctx context.Context, d digest.Digest) (io.ReadSeekCloser, BlobInfo, error)
	LinkBlob(ctx context.Context, repo string, d digest.Digest) error
	BlobLinked(ctx context.Context, repo string, d digest.Digest) (bool, error)
}

// ManifestStore holds manifests by digest, linked into repositories, and
// cached referrers answers.
type ManifestStore interface {
	PutManifest(ctx context.Context, repo string, d digest.Digest, body []byte) error
	GetManifest(ctx context.Context, repo string, d digest.Digest) ([]byte, error)
	GetManifestAny(ctx context.Context, d digest.Digest) ([]byte, error)
	PutReferrers(ctx context.Context, repo string, d digest.Digest, key string, body []byte) error
	GetReferrers(ctx context.Context, repo string, d digest.Digest, key string) ([]byte, error)
}

// TagStore holds tags with their fetched-at times, and lists repositories.
type TagStore interface {
	PutTag(ctx context.Context, repo, tag string, d digest.Digest, fetchedAt time.Time) error
	TouchTag(ctx context.Context, repo, tag string, d digest.Digest, t time.Time) error
	GetTag(ctx context.Context, repo, tag string) (Tag, error)
	Tags(ctx context.Context, repo string) ([]string, error)
	Repositories(ctx context.Context) ([]string, error)
}

// RecordStore holds Stowage's own documents: records (prefetch jobs) and
// pins.
type RecordStore interface {
	PutRecord(ctx context.Context, kind, name string, data []byte) error
	DeleteRecord(ctx context.Context, kind, name string) error
	Records(ctx context.Context, kind string) (map[string][]byte, error)
	PutPin(ctx context.Context, p Pin) error
	GetPin(ctx context.Context, name string) (Pin, error)
	DeletePin(ctx context.Context, name string) error
	Pins(ctx context.Context) ([]Pin, error)
	PinnedBlobs(ctx context.Context) (map[digest.Digest]bool, error)
}

var (
	_ BlobStore     = (*Store)(nil)
	_ ManifestStore = (*Store)(nil)
	_ TagStore      = (*Store)(nil)
	_ RecordStore   = (*Store)(nil)
)
