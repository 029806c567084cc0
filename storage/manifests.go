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

// DefaultMaxManifestSize is the manifest size cap of GetManifest and
// GetManifestAny (the server passes its configured cap to ReadManifest).
const DefaultMaxManifestSize = 4 << 20

var (
	// ErrTooLarge: stored content is over the manifest size cap, so it is
	// not read (a cached layer named as a manifest).
	ErrTooLarge = errors.New("storage: content over the manifest size cap")
	// ErrCorrupt: stored bytes do not hash to their digest. The caller
	// fetches them again; PutManifest overwrites them.
	ErrCorrupt = errors.New("storage: content does not match its digest")
)

// PutManifest stores manifest bytes under their digest and links them into
// repo, as a stock registry would after a push. The caller has verified that
// body hashes to d. Bytes already stored under d are kept when they still
// hash to d and replaced when they do not (a corrupt copy being repaired).
func (s *Store) PutManifest(ctx context.Context, repo string, d digest.Digest, body []byte) error {
	_, err := s.readManifestData(ctx, d, int64(len(body)))
	switch {
	case err == nil:
	case errors.Is(err, ErrNotFound), errors.Is(err, ErrCorrupt), errors.Is(err, ErrTooLarge):
		if err := s.d.PutContent(ctx, blobDataPath(d), body); err != nil {
			return fmt.Errorf("storage: put manifest %s: %w", d, err)
		}
	default:
		return err
	}
	return s.writeLink(ctx, revisionLinkPath(repo, d), d)
}

// GetManifest returns the bytes of a manifest linked into repo, up to
// DefaultMaxManifestSize. A manifest that exists only under another
// repository is ErrNotFound here (see GetManifestAny).
func (s *Store) GetManifest(ctx context.Context, repo string, d digest.Digest) ([]byte, error) {
	return s.ReadManifest(ctx, repo, d, DefaultMaxManifestSize)
}

// GetManifestAny returns manifest bytes by digest from any repository, up to
// DefaultMaxManifestSize.
func (s *Store) GetManifestAny(ctx context.Context, d digest.Digest) ([]byte, error) {
	return s.ReadManifest(ctx, "", d, DefaultMaxManifestSize)
}

// ReadManifest returns the stored bytes of manifest d, never reading more
// than max bytes: content over max is ErrTooLarge (checked with a Stat
// before any read), bytes that do not hash to d are ErrCorrupt. With repo
// set, d must be linked into repo as a manifest revision (else
// ErrNotFound); with repo "" any stored content qualifies, so the caller
// must check that the bytes parse as a manifest.
func (s *Store) ReadManifest(ctx context.Context, repo string, d digest.Digest, max int64) ([]byte, error) {
	if repo != "" {
		if _, err := s.readLink(ctx, revisionLinkPath(repo, d)); err != nil {
			return nil, err
		}
	}
	return s.readManifestData(ctx, d, max)
}

func (s *Store) readManifestData(ctx context.Context, d digest.Digest, max int64) ([]byte, error) {
	if err := d.Validate(); err != nil {
		return nil, fmt.Errorf("storage: manifest digest %q: %w", d, err)
	}
	p := blobDataPath(d)
	fi, err := s.d.Stat(ctx, p)
	if err != nil {
		return nil, mapErr(err)
	}
	if fi.IsDir() {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, p)
	}
	if fi.Size() > max {
		return nil, fmt.Errorf("%w: %s is %d bytes, cap %d", ErrTooLarge, d, fi.Size(), max)
	}
	rc, err := s.d.Reader(ctx, p, 0)
	if err != nil {
		return nil, mapErr(err)
	}
	defer rc.Close()
	// The size may have changed since the Stat: still never read past max.
	b, err := io.ReadAll(io.LimitReader(rc, max+1))
	if err != nil {
		return nil, fmt.Errorf("storage: read manifest %s: %w", d, err)
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("%w: %s grew past the cap %d", ErrTooLarge, d, max)
	}
	if d.Algorithm().FromBytes(b) != d {
		return nil, fmt.Errorf("%w: manifest %s", ErrCorrupt, d)
	}
	return b, nil
}

// Tag is a tag's resolution with Stowage's fetched-at time. FetchedAt is zero
// for a tag written by something else (a stock registry): such a tag has
// nothing to revalidate against. TimeUnreadable marks a tag whose time file
// exists but cannot be read: Stowage wrote it, so it must be revalidated.
type Tag struct {
	Digest         digest.Digest
	FetchedAt      time.Time
	TimeUnreadable bool
}

// PutTag points tag at d in repo and records when it was fetched. The time
// is written first: a crash between the writes leaves a time without a new
// link (the old link, or none, at worst fresh for one TTL), never a link
// without a time, which would read as a stock registry's tag and never be
// revalidated.
func (s *Store) PutTag(ctx context.Context, repo, tag string, d digest.Digest, fetchedAt time.Time) error {
	if err := s.TouchTag(ctx, repo, tag, fetchedAt); err != nil {
		return err
	}
	if err := s.writeLink(ctx, tagIndexLinkPath(repo, tag, d), d); err != nil {
		return err
	}
	return s.writeLink(ctx, tagCurrentLinkPath(repo, tag), d)
}

// TouchTag records that tag was revalidated against its upstream at t.
func (s *Store) TouchTag(ctx context.Context, repo, tag string, t time.Time) error {
	return s.d.PutContent(ctx, tagFetchedPath(repo, tag), []byte(t.UTC().Format(time.RFC3339Nano)))
}

// GetTag resolves a tag. A missing time file means a tag Stowage never
// wrote (FetchedAt zero); an unreadable one sets TimeUnreadable.
func (s *Store) GetTag(ctx context.Context, repo, tag string) (Tag, error) {
	d, err := s.readLink(ctx, tagCurrentLinkPath(repo, tag))
	if err != nil {
		return Tag{}, err
	}
	t := Tag{Digest: d}
	b, err := s.d.GetContent(ctx, tagFetchedPath(repo, tag))
	switch {
	case err == nil:
		at, perr := time.Parse(time.RFC3339Nano, strings.TrimSpace(string(b)))
		if perr != nil || at.IsZero() {
			t.TimeUnreadable = true
		} else {
			t.FetchedAt = at
		}
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
