package bundle

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"
	"time"

	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"

	"github.com/stowage/stowage/storage"
)

// Limits of an import.
const (
	// maxLinkSize bounds a link file's content.
	maxLinkSize = 256
	// maxLinks bounds the links held until the blobs are in.
	maxLinks = 1 << 20
	// maxProblems bounds the problems reported.
	maxProblems = 1000
)

// link is a repository link seen in the archive, applied after the blobs.
type link struct {
	kind string // "revision", "layer", "tag"
	repo string
	tag  string
	d    digest.Digest
}

type importer struct {
	ctx   context.Context
	store *storage.Store
	now   time.Time
	st    Stats
	links []link
	errs  []error
	// fetched are the bundle's tag fetched-at times, by tagKey.
	fetched map[string]time.Time
	// declared are the blob sizes the bundle's manifests declare.
	declared map[digest.Digest]int64
}

func tagKey(repo, tag string) string { return repo + ":" + tag }

// Import reads a registry-layout tar stream into store. Tags get now as
// their fetched-at time, so that they are revalidated against the
// upstream once the tag TTL has passed (and served stale, within
// max_stale, while it cannot be reached). The error joins every problem
// (test with errors.Is against ErrUnsafeEntry, ErrNotLayout, ErrCorrupt,
// ErrMissing, ErrTooLarge); what could be imported is imported regardless.
//
// Nothing is read whole or without a bound: a blob entry larger than
// MaxManifestSize must be declared with its exact size by a manifest read
// before it (Export writes manifests first; when r is an io.ReadSeeker,
// such as a file, its manifests are read in a first pass, so the order does
// not matter), and a manifest is never larger than MaxManifestSize.
func Import(ctx context.Context, store *storage.Store, r io.Reader, now time.Time) (Stats, error) {
	im := &importer{ctx: ctx, store: store, now: now, fetched: map[string]time.Time{}, declared: map[digest.Digest]int64{}}
	if rs, ok := r.(io.ReadSeeker); ok {
		if err := im.prescan(rs); err != nil {
			return im.st, fmt.Errorf("bundle: reading archive: %w", err)
		}
	}
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			im.problem(fmt.Errorf("bundle: reading archive: %w", err))
			return im.st, errors.Join(im.errs...)
		}
		if err := ctx.Err(); err != nil {
			return im.st, err
		}
		if err := im.entry(hdr, tr); err != nil {
			im.problem(err)
		}
	}
	im.apply()
	return im.st, errors.Join(im.errs...)
}

func (im *importer) problem(err error) {
	if len(im.errs) < maxProblems {
		im.errs = append(im.errs, err)
		im.st.Problems = append(im.st.Problems, err.Error())
	}
}

// cleanName returns the entry name relative to the root, or an error for
// a name that is absolute, climbs with "..", or is not in canonical form.
func cleanName(name string) (string, error) {
	n := strings.TrimPrefix(name, "./")
	n = strings.TrimSuffix(n, "/")
	switch {
	case n == "" || n == ".":
		return "", nil // the root itself
	case strings.HasPrefix(n, "/") || strings.Contains(n, `\`) || strings.ContainsRune(n, 0):
		return "", fmt.Errorf("%w: %q is an absolute or non-portable path", ErrUnsafeEntry, name)
	case path.Clean(n) != n || n == ".." || strings.HasPrefix(n, "../") || strings.Contains(n, "/../"):
		return "", fmt.Errorf("%w: %q is not a clean relative path", ErrUnsafeEntry, name)
	}
	return n, nil
}

// entry handles one archive entry.
func (im *importer) entry(hdr *tar.Header, r io.Reader) error {
	if hdr.Typeflag == tar.TypeXGlobalHeader {
		return nil
	}
	name, err := cleanName(hdr.Name)
	if err != nil {
		return err
	}
	switch hdr.Typeflag {
	case tar.TypeDir:
		if name == "" || strings.HasPrefix(v2Root+"/", name+"/") || strings.HasPrefix(name, v2Root+"/") || name == v2Root {
			return nil // directories are created by the store as needed
		}
		return fmt.Errorf("%w: directory %q", ErrNotLayout, hdr.Name)
	case tar.TypeReg, tar.TypeRegA: //nolint:staticcheck // TypeRegA: old archives
	default:
		return fmt.Errorf("%w: %q is not a regular file (type %q)", ErrUnsafeEntry, hdr.Name, hdr.Typeflag)
	}
	if m := reBlob.FindStringSubmatch(name); m != nil {
		if m[1] != m[2][:2] {
			return fmt.Errorf("%w: %q", ErrNotLayout, hdr.Name)
		}
		return im.blob(digest.NewDigestFromEncoded(digest.SHA256, m[2]), hdr.Size, r)
	}
	if m := reTagTime.FindStringSubmatch(name); m != nil {
		// Stowage's fetched-at time of the tag where it was exported: an
		// import never replaces a tag the cache fetched later than that.
		body, err := io.ReadAll(io.LimitReader(r, maxLinkSize+1))
		if err != nil {
			return err
		}
		t, err := time.Parse(time.RFC3339Nano, strings.TrimSpace(string(body)))
		if err != nil || len(body) > maxLinkSize {
			return fmt.Errorf("%w: %q does not hold a time", ErrCorrupt, hdr.Name)
		}
		if len(im.fetched) >= maxLinks {
			return fmt.Errorf("bundle: more than %d tag times", maxLinks)
		}
		im.fetched[tagKey(m[1], m[2])] = t
		return nil
	}
	l, err := parseLink(name)
	if err != nil {
		return err
	}
	if l.kind == "" {
		return nil // a tag's index link: PutTag writes it
	}
	body, err := io.ReadAll(io.LimitReader(r, maxLinkSize+1))
	if err != nil {
		return err
	}
	got, err := digest.Parse(strings.TrimSpace(string(body)))
	if err != nil || len(body) > maxLinkSize {
		return fmt.Errorf("%w: %q does not hold a digest", ErrCorrupt, hdr.Name)
	}
	if l.d != "" && got != l.d {
		return fmt.Errorf("%w: %q names %s", ErrCorrupt, hdr.Name, got)
	}
	l.d = got
	if len(im.links) >= maxLinks {
		return fmt.Errorf("bundle: more than %d links", maxLinks)
	}
	im.links = append(im.links, l)
	return nil
}

// parseLink classifies a repository link path. A tag index link returns a
// zero link (accepted, nothing to do).
func parseLink(name string) (link, error) {
	var l link
	if m := reRevision.FindStringSubmatch(name); m != nil {
		l = link{kind: "revision", repo: m[1], d: digest.NewDigestFromEncoded(digest.SHA256, m[2])}
	} else if m := reLayer.FindStringSubmatch(name); m != nil {
		l = link{kind: "layer", repo: m[1], d: digest.NewDigestFromEncoded(digest.SHA256, m[2])}
	} else if m := reTagCur.FindStringSubmatch(name); m != nil {
		l = link{kind: "tag", repo: m[1], tag: m[2]}
		if _, err := reference.WithTag(mustName(m[1]), m[2]); err != nil {
			return link{}, fmt.Errorf("%w: %q: bad tag", ErrNotLayout, name)
		}
	} else if m := reTagIndex.FindStringSubmatch(name); m != nil {
		l = link{repo: m[1]}
	} else {
		return link{}, fmt.Errorf("%w: %q", ErrNotLayout, name)
	}
	if _, err := reference.WithName(l.repo); err != nil || strings.Contains(l.repo, "/_") {
		return link{}, fmt.Errorf("%w: %q: bad repository name", ErrNotLayout, name)
	}
	return l, nil
}

// mustName is a Named for tag validation only; the repository itself is
// validated by the caller.
func mustName(repo string) reference.Named {
	n, err := reference.WithName(repo)
	if err != nil {
		n, _ = reference.WithName("x")
	}
	return n
}

// blob copies one blob into a staging file while hashing it and commits it
// only when the digest matches. An entry larger than the bundle declares is
// refused before it is read. A blob already in the cache is not written
// again (a small one is still read, for the sizes it may declare).
func (im *importer) blob(d digest.Digest, size int64, r io.Reader) error {
	if err := im.bound(d, size); err != nil {
		return err
	}
	// A blob that may be a manifest is kept in memory (at most
	// MaxManifestSize) for the sizes it declares.
	var body *bytes.Buffer
	if size <= MaxManifestSize {
		body = bytes.NewBuffer(make([]byte, 0, size))
	}
	if info, err := im.store.StatBlob(im.ctx, d); err == nil && info.Size == size {
		im.st.BlobsPresent++
		if body != nil {
			v := d.Verifier()
			if n, err := io.Copy(io.MultiWriter(body, v), r); err == nil && n == size && v.Verified() {
				im.declare(body.Bytes())
			}
		}
		return nil
	} else if err != nil && !errors.Is(err, storage.ErrNotFound) {
		return err
	}
	st, err := im.store.NewStaging(d)
	if err != nil {
		return err
	}
	defer st.File.Close()
	v := d.Verifier()
	w := io.MultiWriter(st.File, v)
	if body != nil {
		w = io.MultiWriter(st.File, v, body)
	}
	n, err := io.Copy(w, io.LimitReader(r, size))
	if err == nil && (n != size || !v.Verified()) {
		err = fmt.Errorf("%w: blob %s does not match its digest", ErrCorrupt, d)
	}
	if err == nil {
		err = st.File.Sync()
	}
	if err == nil {
		err = im.store.CommitBlob(im.ctx, d, st)
	}
	if err != nil {
		return errors.Join(err, st.Discard())
	}
	im.st.Blobs++
	im.st.Bytes += n
	if body != nil {
		im.declare(body.Bytes())
	}
	return nil
}

// apply writes the links whose targets exist: revisions first (a tag
// needs its manifest in the repository), then layers, then tags.
func (im *importer) apply() {
	for _, kind := range []string{"revision", "layer", "tag"} {
		for _, l := range im.links {
			if l.kind != kind {
				continue
			}
			if err := im.applyLink(l); err != nil {
				im.problem(err)
			}
		}
	}
}

func (im *importer) applyLink(l link) error {
	ctx := im.ctx
	switch l.kind {
	case "revision":
		if ok, err := im.linkedManifest(l.repo, l.d); err != nil || ok {
			return err // already linked, or a blob too large to be one
		}
		body, err := im.store.GetManifestAny(ctx, l.d)
		if err != nil {
			return fmt.Errorf("%w: manifest %s of %s: %w", ErrMissing, l.d, l.repo, err)
		}
		im.st.Links++
		return im.store.PutManifest(ctx, l.repo, l.d, body)
	case "layer":
		if _, err := im.store.StatBlob(ctx, l.d); err != nil {
			return fmt.Errorf("%w: blob %s of %s: %w", ErrMissing, l.d, l.repo, err)
		}
		if ok, err := im.store.BlobLinked(ctx, l.repo, l.d); err == nil && ok {
			return nil
		}
		im.st.Links++
		return im.store.LinkBlob(ctx, l.repo, l.d)
	case "tag":
		if ok, err := im.linkedManifest(l.repo, l.d); err != nil || !ok {
			if err == nil {
				err = storage.ErrNotFound
			}
			return fmt.Errorf("%w: tag %s:%s names %s: %w", ErrMissing, l.repo, l.tag, l.d, err)
		}
		if cur, err := im.store.GetTag(ctx, l.repo, l.tag); err == nil {
			if cur.Digest == l.d {
				return nil // already there: re-import is a no-op
			}
			if t, ok := im.fetched[tagKey(l.repo, l.tag)]; ok && cur.FetchedAt.After(t) {
				im.st.TagsKept++ // the cache's resolution is newer than the bundle's
				return nil
			}
		}
		im.st.Tags++
		return im.store.PutTag(ctx, l.repo, l.tag, l.d, im.now)
	}
	return nil
}

// linkedManifest reports whether repo links manifest d. A blob over
// MaxManifestSize is never read as a manifest: it is an error.
func (im *importer) linkedManifest(repo string, d digest.Digest) (bool, error) {
	info, err := im.store.StatBlob(im.ctx, d)
	if errors.Is(err, storage.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if info.Size > MaxManifestSize {
		return false, fmt.Errorf("%w: %s of %s is %d bytes, more than a manifest may be (%d)", ErrTooLarge, d, repo, info.Size, MaxManifestSize)
	}
	_, err = im.store.GetManifest(im.ctx, repo, d)
	if errors.Is(err, storage.ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}
