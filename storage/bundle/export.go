package bundle

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/stowage/stowage/storage"
)

// Sentinel errors; test with errors.Is.
var (
	// ErrUnsafeEntry marks an archive entry that would escape the root or
	// is not a regular file or directory (links, devices, FIFOs).
	ErrUnsafeEntry = errors.New("bundle: unsafe entry")
	// ErrNotLayout marks an entry that is not part of the registry layout.
	ErrNotLayout = errors.New("bundle: not part of the registry layout")
	// ErrCorrupt marks a blob whose bytes do not match its digest, or a link
	// whose content does not match its path.
	ErrCorrupt = errors.New("bundle: corrupt entry")
	// ErrMissing marks a link to something neither the archive nor the
	// cache holds.
	ErrMissing = errors.New("bundle: missing content")
)

// Image is one image to export.
type Image struct {
	// Repository is the cache repository ("docker.io/library/alpine").
	Repository string
	// Tag is exported as a tag link when not "".
	Tag string
	// Digest is the top-level manifest the tag points at.
	Digest digest.Digest
	// Manifests are every manifest digest (index and children).
	Manifests []digest.Digest
	// Blobs are the config and layer digests.
	Blobs []digest.Digest
}

// Stats counts what an export or import wrote.
type Stats struct {
	// Blobs written (export) or committed (import); Bytes their size.
	Blobs int   `json:"blobs"`
	Bytes int64 `json:"bytes"`
	// BlobsPresent were already in the cache (import).
	BlobsPresent int `json:"blobs_present"`
	// Links are revision and layer links; Tags are tag links.
	Links int `json:"links"`
	Tags  int `json:"tags"`
	// TagsKept are bundle tags not applied (import) because the cache
	// holds the same tag pointing elsewhere, fetched after the bundle's.
	TagsKept int `json:"tags_kept,omitempty"`
	// Problems are entries refused or not applied (import).
	Problems []string `json:"problems,omitempty"`
}

// Export writes the images as a tar stream to w: every blob once, the
// manifests first (so that an import reading the stream knows the size
// each manifest declares for the blobs after them), then the links. It
// fails if the store lacks a blob or a stored blob no longer matches its
// digest.
func Export(ctx context.Context, store *storage.Store, w io.Writer, images []Image) (Stats, error) {
	var st Stats
	tw := tar.NewWriter(w)
	now := time.Now().UTC().Truncate(time.Second)
	seen := map[digest.Digest]bool{}
	var manifests, blobs []digest.Digest
	add := func(to *[]digest.Digest, ds ...digest.Digest) {
		for _, d := range ds {
			if d != "" && !seen[d] {
				seen[d] = true
				*to = append(*to, d)
			}
		}
	}
	for _, im := range images {
		add(&manifests, im.Digest)
		add(&manifests, im.Manifests...)
	}
	for _, im := range images {
		add(&blobs, im.Blobs...)
	}
	sort.Slice(manifests, func(i, j int) bool { return manifests[i] < manifests[j] })
	sort.Slice(blobs, func(i, j int) bool { return blobs[i] < blobs[j] })
	for _, d := range append(manifests, blobs...) {
		n, err := exportBlob(ctx, store, tw, d, now)
		if err != nil {
			return st, err
		}
		st.Blobs++
		st.Bytes += n
	}
	links := map[string]digest.Digest{}
	fetched := map[string]time.Time{} // tag fetched-at sidecars, for import to compare
	for _, im := range images {
		ms := append([]digest.Digest{im.Digest}, im.Manifests...)
		for _, d := range ms {
			links[revisionPath(im.Repository, d)] = d
		}
		for _, d := range im.Blobs {
			links[layerPath(im.Repository, d)] = d
		}
		if im.Tag != "" {
			links[tagCurrentPath(im.Repository, im.Tag)] = im.Digest
			links[tagIndexPath(im.Repository, im.Tag, im.Digest)] = im.Digest
			if t, err := store.GetTag(ctx, im.Repository, im.Tag); err == nil && t.Digest == im.Digest && !t.FetchedAt.IsZero() {
				fetched[tagFetchedPath(im.Repository, im.Tag)] = t.FetchedAt
			}
		}
	}
	bodies := make(map[string]string, len(links)+len(fetched))
	for n, d := range links {
		bodies[n] = d.String()
	}
	for n, t := range fetched {
		bodies[n] = t.UTC().Format(time.RFC3339Nano)
	}
	names := make([]string, 0, len(bodies))
	for n := range bodies {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		body := []byte(bodies[n])
		hdr := &tar.Header{Typeflag: tar.TypeReg, Name: n, Mode: 0o644, Size: int64(len(body)), ModTime: now, Format: tar.FormatPAX}
		if err := tw.WriteHeader(hdr); err != nil {
			return st, err
		}
		if _, err := tw.Write(body); err != nil {
			return st, err
		}
		switch {
		case reTagTime.MatchString(n):
			// a tag's fetched-at sidecar, not a link
		case reTagCur.MatchString(n):
			st.Tags++
		case !reTagIndex.MatchString(n):
			st.Links++
		}
	}
	return st, tw.Close()
}

// exportBlob streams one blob into the archive, hashing it on the way.
func exportBlob(ctx context.Context, store *storage.Store, tw *tar.Writer, d digest.Digest, now time.Time) (int64, error) {
	rc, info, err := store.OpenBlob(ctx, d)
	if err != nil {
		return 0, fmt.Errorf("bundle: blob %s: %w", d, err)
	}
	defer rc.Close()
	hdr := &tar.Header{Typeflag: tar.TypeReg, Name: blobPath(d), Mode: 0o644, Size: info.Size, ModTime: now, Format: tar.FormatPAX}
	if err := tw.WriteHeader(hdr); err != nil {
		return 0, err
	}
	v := d.Verifier()
	n, err := io.Copy(tw, io.TeeReader(io.LimitReader(rc, info.Size), v))
	if err != nil {
		return n, fmt.Errorf("bundle: blob %s: %w", d, err)
	}
	if n != info.Size || !v.Verified() {
		return n, fmt.Errorf("%w: cached blob %s does not match its digest", ErrCorrupt, d)
	}
	return n, nil
}
