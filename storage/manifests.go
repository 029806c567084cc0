package storage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path"
	"sort"
	"strings"
	"time"

	driver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/opencontainers/go-digest"
)

// PutManifest stores manifest bytes under their digest and links them into
// repo, as a stock registry would after a push. The caller has verified that
// body hashes to d.
func (s *Store) PutManifest(ctx context.Context, repo string, d digest.Digest, body []byte) error {
	ok, err := s.exists(ctx, blobDataPath(d))
	if err != nil {
		return err
	}
	if !ok {
		if err := s.d.PutContent(ctx, blobDataPath(d), body); err != nil {
			return fmt.Errorf("storage: put manifest %s: %w", d, err)
		}
	}
	return s.writeLink(ctx, revisionLinkPath(repo, d), d)
}

// GetManifest returns the bytes of a manifest linked into repo. A manifest
// that exists only under another repository is ErrNotFound here (see
// GetManifestAny).
func (s *Store) GetManifest(ctx context.Context, repo string, d digest.Digest) ([]byte, error) {
	if _, err := s.readLink(ctx, revisionLinkPath(repo, d)); err != nil {
		return nil, err
	}
	return s.GetManifestAny(ctx, d)
}

// GetManifestAny returns manifest bytes by digest from any repository.
func (s *Store) GetManifestAny(ctx context.Context, d digest.Digest) ([]byte, error) {
	b, err := s.d.GetContent(ctx, blobDataPath(d))
	if err != nil {
		return nil, mapErr(err)
	}
	if digest.FromBytes(b) != d && d.Algorithm() == digest.SHA256 {
		return nil, fmt.Errorf("storage: manifest %s is corrupt on disk", d)
	}
	return b, nil
}

// Tag is a tag's resolution with Stowage's fetched-at time. FetchedAt is zero
// for a tag written by something else (a stock registry, an import): such a
// tag has nothing to revalidate against.
type Tag struct {
	Digest    digest.Digest
	FetchedAt time.Time
}

// PutTag points tag at d in repo and records when it was fetched.
func (s *Store) PutTag(ctx context.Context, repo, tag string, d digest.Digest, fetchedAt time.Time) error {
	if err := s.writeLink(ctx, tagIndexLinkPath(repo, tag, d), d); err != nil {
		return err
	}
	if err := s.writeLink(ctx, tagCurrentLinkPath(repo, tag), d); err != nil {
		return err
	}
	return s.TouchTag(ctx, repo, tag, fetchedAt)
}

// TouchTag records that tag was revalidated against its upstream at t.
func (s *Store) TouchTag(ctx context.Context, repo, tag string, t time.Time) error {
	return s.d.PutContent(ctx, tagFetchedPath(repo, tag), []byte(t.UTC().Format(time.RFC3339Nano)))
}

// GetTag resolves a tag.
func (s *Store) GetTag(ctx context.Context, repo, tag string) (Tag, error) {
	d, err := s.readLink(ctx, tagCurrentLinkPath(repo, tag))
	if err != nil {
		return Tag{}, err
	}
	t := Tag{Digest: d}
	b, err := s.d.GetContent(ctx, tagFetchedPath(repo, tag))
	switch {
	case err == nil:
		// A corrupt time reads as "never fetched", which is the safe side:
		// the tag is then served as locally authoritative.
		t.FetchedAt, _ = time.Parse(time.RFC3339Nano, strings.TrimSpace(string(b)))
	case !errors.Is(mapErr(err), ErrNotFound):
		return Tag{}, err
	}
	return t, nil
}

// Tags lists the tags cached for repo, sorted.
func (s *Store) Tags(ctx context.Context, repo string) ([]string, error) {
	entries, err := s.d.List(ctx, tagsPath(repo))
	if err != nil {
		return nil, mapErr(err)
	}
	tags := make([]string, 0, len(entries))
	for _, e := range entries {
		tags = append(tags, path.Base(e))
	}
	sort.Strings(tags)
	return tags, nil
}

// Repositories lists cached repositories (those with manifests), sorted.
func (s *Store) Repositories(ctx context.Context) ([]string, error) {
	var repos []string
	err := s.d.Walk(ctx, reposRoot, func(fi driver.FileInfo) error {
		if !fi.IsDir() {
			return nil
		}
		base := path.Base(fi.Path())
		if strings.HasPrefix(base, "_") {
			if base == "_manifests" {
				repos = append(repos, strings.TrimPrefix(path.Dir(fi.Path()), reposRoot+"/"))
			}
			return driver.ErrSkipDir
		}
		return nil
	})
	if err != nil && !errors.Is(mapErr(err), ErrNotFound) {
		return nil, err
	}
	sort.Strings(repos)
	return repos, nil
}

// PutReferrers caches a referrers answer for subject d under key (the
// artifactType filter, "" for none).
func (s *Store) PutReferrers(ctx context.Context, repo string, d digest.Digest, key string, body []byte) error {
	return s.d.PutContent(ctx, referrersPath(repo, d, referrersKey(key)), body)
}

// GetReferrers returns a cached referrers answer.
func (s *Store) GetReferrers(ctx context.Context, repo string, d digest.Digest, key string) ([]byte, error) {
	b, err := s.d.GetContent(ctx, referrersPath(repo, d, referrersKey(key)))
	return b, mapErr(err)
}

func referrersKey(artifactType string) string {
	if artifactType == "" {
		return "all"
	}
	return "type-" + digest.FromString(artifactType).Encoded()[:32]
}

// driverReadSeeker adapts a driver's offset reader to io.ReadSeeker for
// http.ServeContent on non-filesystem drivers.
type driverReadSeeker struct {
	// ctx is the request's: io.ReadSeeker has no context parameter, and the
	// reader lives only as long as the request that opened it.
	ctx  context.Context
	d    driver.StorageDriver
	path string
	size int64
	off  int64
	rc   io.ReadCloser
}

func (r *driverReadSeeker) Read(p []byte) (int, error) {
	if r.off >= r.size {
		return 0, io.EOF
	}
	if r.rc == nil {
		rc, err := r.d.Reader(r.ctx, r.path, r.off)
		if err != nil {
			return 0, mapErr(err)
		}
		r.rc = rc
	}
	n, err := r.rc.Read(p)
	r.off += int64(n)
	return n, err
}

func (r *driverReadSeeker) Seek(offset int64, whence int) (int64, error) {
	var abs int64
	switch whence {
	case io.SeekStart:
		abs = offset
	case io.SeekCurrent:
		abs = r.off + offset
	case io.SeekEnd:
		abs = r.size + offset
	default:
		return 0, errors.New("storage: bad whence")
	}
	if abs < 0 {
		return 0, errors.New("storage: negative position")
	}
	if abs != r.off && r.rc != nil {
		_ = r.rc.Close()
		r.rc = nil
	}
	r.off = abs
	return abs, nil
}

func (r *driverReadSeeker) Close() error {
	if r.rc != nil {
		return r.rc.Close()
	}
	return nil
}
