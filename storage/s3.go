package storage

import (
	"context"
	"fmt"
	"net/http"

	"github.com/distribution/distribution/v3/registry/storage/driver/s3-aws"
	"github.com/opencontainers/go-digest"
)

// WithRedirect makes BlobURL answer with presigned URLs of the object store
// (storage.redirect), so that the proxy can send clients to the bucket
// instead of streaming the bytes itself. Drivers without URLs (filesystem,
// inmemory) ignore it.
func WithRedirect(on bool) Option {
	return func(o *options) { o.redirect = on }
}

// NewS3 opens a cache in an S3-compatible object store through
// distribution's s3-aws driver. params are that driver's parameters under
// their own names (bucket, region, regionendpoint, forcepathstyle,
// accesskey, secretkey, rootdirectory, ...), as in a distribution
// registry's storage.s3 section; the layout in the bucket is the
// registry's, so a registry on the same bucket and rootdirectory serves the
// cache. Fills stage locally and upload on commit (see New).
func NewS3(ctx context.Context, params map[string]any, opts ...Option) (*Store, error) {
	d, err := s3.FromParameters(ctx, params)
	if err != nil {
		return nil, fmt.Errorf("storage: s3 driver: %w", err)
	}
	return New(d, opts...)
}

// BlobURL returns a URL the client of r (a GET or HEAD of blob d) may fetch
// the committed blob from directly: a presigned URL of the object store,
// valid for about 20 minutes. It returns "" when the Store was not opened
// WithRedirect(true) or its driver has no such URLs; the caller then
// serves the bytes itself. It does not check that d is committed.
func (s *Store) BlobURL(r *http.Request, d digest.Digest) (string, error) {
	if !s.redirect {
		return "", nil
	}
	u, err := s.d.RedirectURL(r, blobDataPath(d))
	if err != nil {
		return "", fmt.Errorf("storage: redirect URL for %s: %w", d, err)
	}
	return u, nil
}
