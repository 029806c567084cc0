package storage

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"time"

	"github.com/opencontainers/go-digest"
)

// Garbage collection: what no tag, no pin and nobody recently used
// references goes. The rule, safe beside a running server on the same
// root:
//
//   - roots are every tag's current manifest, every pinned digest, and
//     every manifest revision written or used within the grace period;
//   - a root manifest keeps its config, layers, child manifests (of an
//     index) and blobs, recursively, and the manifests that name it as
//     their subject (signatures, SBOMs) keep theirs;
//   - every other blob or revision is collected only when it was neither
//     cached nor used within the grace period: its file's modification
//     time (the commit) and its last access as the servers persist it
//     (usage.LoadAccess; a server writes its accesses every minute) are
//     both older. A blob a server fetched just before its manifest is
//     young by its commit time, so it stays until the manifest arrives.
//
// A collected blob loses its _layers links first; a collected revision
// its tag index entries. Manifests are never parsed leniently: one that a
// root needs but cannot be read or parsed stops the collection before
// anything is removed (run "proxy verify --repair" first).

// GCOptions configure a collection.
type GCOptions struct {
	// Grace protects what was cached or used this recently.
	Grace time.Duration
	// Access are the persisted last-access times (usage.LoadAccess).
	Access map[digest.Digest]time.Time
	// DryRun reports without removing.
	DryRun bool
	// Now is the current time (time.Now when zero).
	Now time.Time
	// Report, when set, sees every item removed (or, dry, to remove).
	Report func(GCItem)
}

// GCItem is one thing a collection removes.
type GCItem struct {
	// Kind is "blob" or "revision".
	Kind   string
	Repo   string // revisions only
	Digest digest.Digest
	Size   int64 // blobs only
}

// GCResult sums up a collection.
type GCResult struct {
	Blobs     int
	BlobBytes int64
	Revisions int
	// Links are the _layers links and tag index entries removed with them.
	Links int
	// Kept is the number of blobs kept.
	Kept int
}

type gcState struct {
	s      *Store
	opts   GCOptions
	marked map[digest.Digest]bool
	// graceEnd: anything used after it is young.
	graceEnd time.Time
}

// GC collects unreferenced blobs and manifest revisions (see the rule
// above).
func (s *Store) GC(ctx context.Context, opts GCOptions) (GCResult, error) {
	var res GCResult
	if opts.Now.IsZero() {
		opts.Now = time.Now()
	}
	g := &gcState{s: s, opts: opts, marked: map[digest.Digest]bool{}, graceEnd: opts.Now.Add(-opts.Grace)}
	pinned, err := s.PinnedBlobs(ctx)
	if err != nil {
		return res, fmt.Errorf("gc: pins: %w", err)
	}
	repos, err := s.LinkedRepositories(ctx)
	if err != nil {
		return res, fmt.Errorf("gc: %w", err)
	}
	var roots []digest.Digest
	for d := range pinned {
		roots = append(roots, d)
	}
	revisions := map[string][]LinkEntry{}
	for _, repo := range repos {
		r, err := g.repoRoots(ctx, repo)
		if err != nil {
			return res, err
		}
		roots = append(roots, r...)
		if revisions[repo], err = s.RevisionLinks(ctx, repo); err != nil {
			return res, fmt.Errorf("gc: %s: %w", repo, err)
		}
		for _, e := range revisions[repo] {
			if e.Digest != "" && g.young(ctx, e.Digest, e.Path) {
				roots = append(roots, e.Digest)
			}
		}
	}
	for _, d := range roots {
		if err := g.mark(ctx, d); err != nil {
			return res, err
		}
	}
	if err := g.markReferrers(ctx, revisions); err != nil {
		return res, err
	}
	var blobs []BlobRecord
	if err := s.WalkBlobs(ctx, func(b BlobRecord) error {
		blobs = append(blobs, b)
		return nil
	}); err != nil {
		return res, fmt.Errorf("gc: %w", err)
	}
	// Sweep: revisions (and their tag index entries) first, then blobs.
	for _, repo := range repos {
		n, links, err := g.sweepRevisions(ctx, repo, revisions[repo])
		if err != nil {
			return res, err
		}
		res.Revisions += n
		res.Links += links
	}
	for _, b := range blobs {
		if g.marked[b.Digest] || b.ModTime.After(g.graceEnd) || opts.Access[b.Digest].After(g.graceEnd) {
			res.Kept++
			continue
		}
		if opts.Report != nil {
			opts.Report(GCItem{Kind: "blob", Digest: b.Digest, Size: b.Size})
		}
		res.Blobs++
		res.BlobBytes += b.Size
		if opts.DryRun {
			continue
		}
		links, err := s.RemoveBlob(ctx, b.Digest, repos)
		res.Links += links
		if err != nil {
			return res, fmt.Errorf("gc: %w", err)
		}
	}
	return res, nil
}

// repoRoots returns the manifests repo's tags point at. A tag whose link
// cannot be read is an error: its manifest would be collected.
func (g *gcState) repoRoots(ctx context.Context, repo string) ([]digest.Digest, error) {
	tags, err := g.s.list(ctx, tagsPath(repo))
	if err != nil {
		return nil, fmt.Errorf("gc: %s tags: %w", repo, err)
	}
	var roots []digest.Digest
	for _, t := range tags {
		d, err := g.s.ReadLink(ctx, tagCurrentLinkPath(repo, path.Base(t)))
		if errors.Is(err, ErrNotFound) {
			continue // a tag directory without a current link references nothing
		}
		if err != nil {
			return nil, fmt.Errorf("gc: %s:%s: %w (run proxy verify --repair)", repo, path.Base(t), err)
		}
		roots = append(roots, d)
	}
	return roots, nil
}

// young reports whether d (or its link at p) was written or used within
// the grace period.
func (g *gcState) young(ctx context.Context, d digest.Digest, p string) bool {
	if g.opts.Access[d].After(g.graceEnd) {
		return true
	}
	t, err := g.s.LinkModTime(ctx, p)
	return err != nil || t.After(g.graceEnd) // unreadable: keep
}

// manifestRefs are the digests a manifest of any known kind references.
type manifestRefs struct {
	Config *struct {
		Digest digest.Digest `json:"digest"`
	} `json:"config"`
	Layers []struct {
		Digest digest.Digest `json:"digest"`
	} `json:"layers"`
	Blobs []struct {
		Digest digest.Digest `json:"digest"`
	} `json:"blobs"`
	Manifests []struct {
		Digest digest.Digest `json:"digest"`
	} `json:"manifests"`
	Subject *struct {
		Digest digest.Digest `json:"digest"`
	} `json:"subject"`
	FSLayers []struct {
		BlobSum digest.Digest `json:"blobSum"`
	} `json:"fsLayers"`
}

// mark marks d and, when d is a manifest held here, what it references.
func (g *gcState) mark(ctx context.Context, d digest.Digest) error {
	stack := []digest.Digest{d}
	for len(stack) > 0 && len(stack) < 1<<20 {
		d := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if g.marked[d] {
			continue
		}
		g.marked[d] = true
		refs, ok, err := g.readManifest(ctx, d)
		if err != nil {
			return err
		}
		if !ok {
			continue
		}
		if refs.Config != nil {
			g.marked[refs.Config.Digest] = true
		}
		for _, l := range refs.Layers {
			g.marked[l.Digest] = true
		}
		for _, l := range refs.Blobs {
			g.marked[l.Digest] = true
		}
		for _, l := range refs.FSLayers {
			g.marked[l.BlobSum] = true
		}
		for _, m := range refs.Manifests {
			stack = append(stack, m.Digest)
		}
	}
	return nil
}

// readManifest parses d when it is a manifest in the cache. A blob that
// is not JSON (a layer) is not a manifest; a missing one has nothing to
// keep.
func (g *gcState) readManifest(ctx context.Context, d digest.Digest) (manifestRefs, bool, error) {
	var refs manifestRefs
	info, err := g.s.StatBlob(ctx, d)
	if errors.Is(err, ErrNotFound) {
		return refs, false, nil
	}
	if err != nil {
		return refs, false, fmt.Errorf("gc: %s: %w", d, err)
	}
	if info.Size > 4<<20 {
		return refs, false, nil // far larger than any manifest: a layer
	}
	b, err := g.s.GetManifestAny(ctx, d)
	if errors.Is(err, ErrNotFound) {
		return refs, false, nil
	}
	if err != nil {
		return refs, false, fmt.Errorf("gc: %w (run proxy verify --repair)", err)
	}
	if len(b) == 0 || b[0] != '{' {
		return refs, false, nil // not JSON: a layer
	}
	var top map[string]json.RawMessage
	if json.Unmarshal(b, &top) != nil || top["schemaVersion"] == nil {
		return refs, false, nil // JSON, but no manifest (a config, an artifact)
	}
	if err := json.Unmarshal(b, &refs); err != nil {
		// A manifest whose references cannot be read: refuse to guess.
		return refs, false, fmt.Errorf("gc: %s looks like a manifest but does not parse: %w", d, err)
	}
	return refs, true, nil
}

// markReferrers keeps the manifests whose subject is kept (signatures,
// attestations), with what they reference.
func (g *gcState) markReferrers(ctx context.Context, revisions map[string][]LinkEntry) error {
	for _, entries := range revisions {
		for _, e := range entries {
			if e.Digest == "" || g.marked[e.Digest] {
				continue
			}
			refs, ok, err := g.readManifest(ctx, e.Digest)
			if err != nil {
				return err
			}
			if ok && refs.Subject != nil && g.marked[refs.Subject.Digest] {
				if err := g.mark(ctx, e.Digest); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// sweepRevisions removes repo's unmarked revisions and the tag index
// entries pointing at them.
func (g *gcState) sweepRevisions(ctx context.Context, repo string, entries []LinkEntry) (revs, links int, err error) {
	gone := map[digest.Digest]bool{}
	for _, e := range entries {
		if e.Digest == "" || g.marked[e.Digest] {
			continue
		}
		gone[e.Digest] = true
		revs++
		if g.opts.Report != nil {
			g.opts.Report(GCItem{Kind: "revision", Repo: repo, Digest: e.Digest})
		}
		if !g.opts.DryRun {
			if err := g.s.RemoveLink(ctx, e.Path); err != nil {
				return revs, links, fmt.Errorf("gc: %w", err)
			}
		}
	}
	if len(gone) == 0 {
		return revs, links, nil
	}
	tags, err := g.s.list(ctx, tagsPath(repo))
	if err != nil {
		return revs, links, fmt.Errorf("gc: %w", err)
	}
	for _, t := range tags {
		idx, err := g.s.TagIndexLinks(ctx, repo, path.Base(t))
		if err != nil {
			return revs, links, fmt.Errorf("gc: %w", err)
		}
		for _, e := range idx {
			if !gone[e.Digest] {
				continue
			}
			links++
			if !g.opts.DryRun {
				if err := g.s.RemoveLink(ctx, e.Path); err != nil {
					return revs, links, fmt.Errorf("gc: %w", err)
				}
			}
		}
	}
	return revs, links, nil
}
