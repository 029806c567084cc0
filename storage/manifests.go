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
// nothing to revalidate against. TimeUnreadable marks a tag whose time
// record exists but gives no time for this digest (it does not parse, or
// it names another digest: a write a crash interrupted): Stowage wrote it,
// so it must be revalidated.
type Tag struct {
	Digest         digest.Digest
	FetchedAt      time.Time
	TimeUnreadable bool
}

// PutTag points tag at d in repo and records when it was fetched.
//
// A new tag on the filesystem appears whole or not at all: its directory
// (the time record, the index entry and the current link) is built in the
// staging directory and renamed into place in one step. When the tag
// exists (a retag, or another process created it meanwhile), and on other
// drivers, which have no directories to rename, it is three writes: the
// time record first, then the index entry, then the current link. A crash
// between them leaves
//
//   - for a retag, the old current link beside a record of the new digest,
//     which GetTag reads as stale (TimeUnreadable): revalidated, never
//     served as freshly fetched;
//   - for a new tag (object storage only), a tag without a current link:
//     not found for GetTag and Tags, fetched again and completed at the
//     next pull, a note for Verify.
//
// Never a link without a time, which would read as a stock registry's tag
// and never be revalidated.
func (s *Store) PutTag(ctx context.Context, repo, tag string, d digest.Digest, fetchedAt time.Time) error {
	if err := d.Validate(); err != nil {
		return fmt.Errorf("storage: tag %s:%s: %w", repo, tag, err)
	}
	rec := tagRecord{at: fetchedAt, d: d}.encode()
	if l, ok := s.d.(*localDriver); ok {
		dir := path.Join(tagsPath(repo), tag)
		rel := func(p string) string { return strings.TrimPrefix(p, dir+"/") }
		created, err := l.createDir(ctx, dir, map[string][]byte{
			rel(tagFetchedPath(repo, tag)):      rec,
			rel(tagIndexLinkPath(repo, tag, d)): []byte(d.String()),
			rel(tagCurrentLinkPath(repo, tag)):  []byte(d.String()),
		})
		if err != nil {
			return fmt.Errorf("storage: tag %s:%s: %w", repo, tag, err)
		}
		if created {
			return nil
		}
	}
	if err := s.d.PutContent(ctx, tagFetchedPath(repo, tag), rec); err != nil {
		return err
	}
	if err := s.writeLink(ctx, tagIndexLinkPath(repo, tag, d), d); err != nil {
		return err
	}
	return s.writeLink(ctx, tagCurrentLinkPath(repo, tag), d)
}

// TouchTag records that the upstream confirmed at t that tag points at d.
// When the tag has moved to another digest meanwhile, the record names d
// and GetTag reads the tag as stale, which is revalidated.
func (s *Store) TouchTag(ctx context.Context, repo, tag string, d digest.Digest, t time.Time) error {
	if err := d.Validate(); err != nil {
		return fmt.Errorf("storage: tag %s:%s: %w", repo, tag, err)
	}
	return s.d.PutContent(ctx, tagFetchedPath(repo, tag), tagRecord{at: t, d: d}.encode())
}

// GetTag resolves a tag. A missing time record means a tag Stowage never
// wrote (FetchedAt zero); a record that does not parse, or names another
// digest than the current link, sets TimeUnreadable.
func (s *Store) GetTag(ctx context.Context, repo, tag string) (Tag, error) {
	d, err := s.readLink(ctx, tagCurrentLinkPath(repo, tag))
	if err != nil {
		return Tag{}, err
	}
	t := Tag{Digest: d}
	rec, found, err := s.readTagRecord(ctx, repo, tag)
	switch {
	case errors.Is(err, ErrCorruptRecord):
		t.TimeUnreadable = true
	case err != nil:
		return Tag{}, err
	case !found:
	case rec.at.IsZero() || !rec.belongsTo(d):
		t.TimeUnreadable = true
	default:
		t.FetchedAt = rec.at
	}
	return t, nil
}

// Tags lists the tags cached for repo, sorted: those with a current link.
// A tag directory without one (a first write that a crash interrupted on
// object storage) is left out; it is not found either.
func (s *Store) Tags(ctx context.Context, repo string) ([]string, error) {
	if s.root != "" {
		return s.tagsLocal(ctx, repo)
	}
	var tags []string
	top := tagsPath(repo)
	err := s.d.Walk(ctx, top, func(fi driver.FileInfo) error {
		rest := strings.TrimPrefix(fi.Path(), top+"/")
		if tag, ok := strings.CutSuffix(rest, "/current/link"); ok && !fi.IsDir() && !strings.Contains(tag, "/") {
			tags = append(tags, tag)
		}
		return nil
	})
	if err != nil {
		return nil, mapErr(err)
	}
	sort.Strings(tags)
	return tags, nil
}

func (s *Store) tagsLocal(ctx context.Context, repo string) ([]string, error) {
	entries, err := s.d.List(ctx, tagsPath(repo))
	if err != nil {
		return nil, mapErr(err)
	}
	tags := make([]string, 0, len(entries))
	for _, e := range entries {
		tag := path.Base(e)
		ok, err := s.exists(ctx, tagCurrentLinkPath(repo, tag))
		if err != nil {
			return nil, err
		}
		if ok {
			tags = append(tags, tag)
		}
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
