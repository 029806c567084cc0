package storage

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	driver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/opencontainers/go-digest"
)

// Walking and pruning the registry layout, for the usage index, eviction,
// "proxy gc" and "proxy verify". Every listing tolerates objects that
// vanish while it runs (another process may evict or collect them).

// BlobRecord is one committed blob (layer, config or manifest bytes).
type BlobRecord struct {
	Digest  digest.Digest
	Size    int64
	ModTime time.Time
}

// WalkBlobs calls fn for every blob under blobs/. A directory whose name
// is not a digest is skipped. On the filesystem driver it reads the
// directories directly, which is several times faster than the driver's
// Walk on a large cache.
func (s *Store) WalkBlobs(ctx context.Context, fn func(BlobRecord) error) error {
	if s.root != "" {
		return s.walkBlobsLocal(ctx, fn)
	}
	err := s.d.Walk(ctx, blobsRoot, func(fi driver.FileInfo) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		if fi.IsDir() || path.Base(fi.Path()) != "data" {
			return nil
		}
		hexDir := path.Dir(fi.Path())
		alg := path.Base(path.Dir(path.Dir(hexDir)))
		d := digest.NewDigestFromEncoded(digest.Algorithm(alg), path.Base(hexDir))
		if d.Validate() != nil {
			return nil
		}
		return fn(BlobRecord{Digest: d, Size: fi.Size(), ModTime: fi.ModTime()})
	})
	if errors.Is(mapErr(err), ErrNotFound) {
		return nil
	}
	return err
}

func (s *Store) walkBlobsLocal(ctx context.Context, fn func(BlobRecord) error) error {
	top := s.local(blobsRoot)
	algs, err := readDirNames(top)
	if err != nil {
		return err
	}
	for _, alg := range algs {
		prefixes, err := readDirNames(filepath.Join(top, alg))
		if err != nil {
			return err
		}
		for _, pre := range prefixes {
			if err := ctx.Err(); err != nil {
				return err
			}
			hexes, err := readDirNames(filepath.Join(top, alg, pre))
			if err != nil {
				return err
			}
			for _, hex := range hexes {
				d := digest.NewDigestFromEncoded(digest.Algorithm(alg), hex)
				if d.Validate() != nil {
					continue
				}
				fi, err := os.Lstat(filepath.Join(top, alg, pre, hex, "data"))
				if errors.Is(err, fs.ErrNotExist) {
					continue
				}
				if err != nil {
					return err
				}
				if !fi.Mode().IsRegular() {
					continue
				}
				if err := fn(BlobRecord{Digest: d, Size: fi.Size(), ModTime: fi.ModTime()}); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// readDirNames lists a directory's entries; a missing directory is empty.
func readDirNames(dir string) ([]string, error) {
	f, err := os.Open(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return nil, err
	}
	sort.Strings(names)
	return names, nil
}

func (s *Store) local(p string) string { return filepath.Join(s.root, filepath.FromSlash(p)) }

// LinkedRepositories lists every repository directory with a _layers or
// _manifests directory, sorted: the repositories a blob can be linked
// from.
func (s *Store) LinkedRepositories(ctx context.Context) ([]string, error) {
	seen := map[string]bool{}
	err := s.d.Walk(ctx, reposRoot, func(fi driver.FileInfo) error {
		if !fi.IsDir() {
			return nil
		}
		base := path.Base(fi.Path())
		if strings.HasPrefix(base, "_") {
			if base == "_layers" || base == "_manifests" {
				seen[strings.TrimPrefix(path.Dir(fi.Path()), reposRoot+"/")] = true
			}
			return driver.ErrSkipDir
		}
		return nil
	})
	if err != nil && !errors.Is(mapErr(err), ErrNotFound) {
		return nil, err
	}
	repos := make([]string, 0, len(seen))
	for r := range seen {
		repos = append(repos, r)
	}
	sort.Strings(repos)
	return repos, nil
}

// LinkEntry is one link directory of a repository: its name (the digest
// the directory is named after; invalid when the directory name is not a
// digest) and its link file's driver path.
type LinkEntry struct {
	Digest digest.Digest
	Path   string
	// Name is the raw directory name, for reports.
	Name string
}

// LayerLinks lists repo's _layers link directories.
func (s *Store) LayerLinks(ctx context.Context, repo string) ([]LinkEntry, error) {
	return s.linkEntries(ctx, path.Join(reposRoot, repo, "_layers"))
}

// RevisionLinks lists repo's manifest revision link directories.
func (s *Store) RevisionLinks(ctx context.Context, repo string) ([]LinkEntry, error) {
	return s.linkEntries(ctx, path.Join(reposRoot, repo, "_manifests/revisions"))
}

// TagIndexLinks lists the index entries (manifests it pointed at) of a tag.
func (s *Store) TagIndexLinks(ctx context.Context, repo, tag string) ([]LinkEntry, error) {
	return s.linkEntries(ctx, path.Join(tagsPath(repo), tag, "index"))
}

// linkEntries lists <dir>/<alg>/<hex>/link.
func (s *Store) linkEntries(ctx context.Context, dir string) ([]LinkEntry, error) {
	algs, err := s.list(ctx, dir)
	if err != nil {
		return nil, err
	}
	var out []LinkEntry
	for _, a := range algs {
		hexes, err := s.list(ctx, a)
		if err != nil {
			return nil, err
		}
		for _, h := range hexes {
			name := path.Base(path.Dir(h)) + ":" + path.Base(h)
			d := digest.Digest(name)
			if d.Validate() != nil {
				d = ""
			}
			out = append(out, LinkEntry{Digest: d, Path: h + "/link", Name: name})
		}
	}
	return out, nil
}

// list is the driver's List, sorted, with a missing directory empty.
func (s *Store) list(ctx context.Context, p string) ([]string, error) {
	entries, err := s.d.List(ctx, p)
	if errors.Is(mapErr(err), ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	sort.Strings(entries)
	return entries, nil
}

// ReadLink reads a link file written by LinkBlob, PutManifest or PutTag.
// A link whose content is not a digest is an error wrapping
// ErrCorruptLink.
func (s *Store) ReadLink(ctx context.Context, p string) (digest.Digest, error) {
	b, err := s.d.GetContent(ctx, p)
	if err != nil {
		return "", mapErr(err)
	}
	d, err := digest.Parse(strings.TrimSpace(string(b)))
	if err != nil {
		return "", fmt.Errorf("%w %s: %w", ErrCorruptLink, p, err)
	}
	return d, nil
}

// ErrCorruptLink marks a link file whose content is not a digest.
var ErrCorruptLink = errors.New("storage: corrupt link")

// LinkModTime reports when a link file was last written.
func (s *Store) LinkModTime(ctx context.Context, p string) (time.Time, error) {
	fi, err := s.d.Stat(ctx, p)
	if err != nil {
		return time.Time{}, mapErr(err)
	}
	return fi.ModTime(), nil
}

// RemoveBlob deletes a blob and, first, the _layers links to it in
// repos (LinkedRepositories): a stock registry on the same root then
// answers "blob unknown" rather than failing on a dangling link, and the
// next pull through Stowage fetches the blob again. Links are removed
// before the data, so a crash in between leaves an unlinked blob (which
// gc collects), never a dangling link. Manifest revision links are left
// alone: use RemoveRevision. It returns the number of links removed.
//
// The links this Store wrote into repositories missing from repos (linked
// after the caller listed them) are removed too, and a LinkBlob of d by
// this Store waits for RemoveBlob to end (blobGuard).
func (s *Store) RemoveBlob(ctx context.Context, d digest.Digest, repos []string) (int, error) {
	if err := d.Validate(); err != nil {
		return 0, fmt.Errorf("storage: remove blob: %w", err)
	}
	defer s.guard.acquire(d, true)()
	links := 0
	for _, repo := range s.guard.withLinked(repos) {
		p := path.Dir(layerLinkPath(repo, d))
		removed, err := s.deleteIfExists(ctx, p)
		if err != nil {
			return links, fmt.Errorf("storage: remove blob %s: link in %s: %w", d, repo, err)
		}
		if removed {
			links++
		}
	}
	if _, err := s.deleteIfExists(ctx, path.Dir(blobDataPath(d))); err != nil {
		return links, fmt.Errorf("storage: remove blob %s: %w", d, err)
	}
	return links, nil
}

// RemoveLink deletes one link directory (the directory holding the link
// file at p, as LinkEntry.Path names it).
func (s *Store) RemoveLink(ctx context.Context, p string) error {
	if !strings.HasPrefix(p, reposRoot+"/") || path.Base(p) != "link" {
		return fmt.Errorf("storage: %q is not a link path", p)
	}
	_, err := s.deleteIfExists(ctx, path.Dir(p))
	return err
}

// RemoveTag deletes a tag (its current link, index and fetched-at time).
func (s *Store) RemoveTag(ctx context.Context, repo, tag string) error {
	if tag == "" || strings.Contains(tag, "/") {
		return fmt.Errorf("storage: invalid tag %q", tag)
	}
	_, err := s.deleteIfExists(ctx, path.Join(tagsPath(repo), tag))
	return err
}

// TagFetchedAt reads a tag's fetched-at record: zero when there is none,
// ErrCorruptRecord when it does not parse. It does not check that the
// record belongs to the tag's current link (GetTag does).
func (s *Store) TagFetchedAt(ctx context.Context, repo, tag string) (time.Time, error) {
	rec, _, err := s.readTagRecord(ctx, repo, tag)
	return rec.at, err
}

// ErrCorruptRecord marks a record of Stowage's own that does not parse.
var ErrCorruptRecord = errors.New("storage: corrupt record")

func (s *Store) deleteIfExists(ctx context.Context, p string) (bool, error) {
	err := mapErr(s.d.Delete(ctx, p))
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}
