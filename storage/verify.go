package storage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"
)

// Integrity check of the whole layout: every blob re-hashed, every link
// read and followed, every tag's record parsed. With Repair, what is
// corrupt or dangling is removed so the next pull fetches it again;
// blobs go first, so the links a repair leaves dangling are found and
// removed in the same run.

// VerifyOptions configure Verify.
type VerifyOptions struct {
	// Repair removes what is found corrupt or dangling.
	Repair bool
	// Report, when set, sees every problem as it is found (and repaired).
	Report func(Problem)
	// Progress, when set, sees every blob verified (from several
	// goroutines).
	Progress func(BlobRecord)
	// Parallel is how many blobs are hashed at once (default 4).
	Parallel int
	// InterruptedAge is how long ago a tag's time record without a
	// current link must have been written before Repair removes it as a
	// write a crash interrupted; a younger one may be a write in progress
	// (default LeftoverAge).
	InterruptedAge time.Duration
}

// Problem is one corrupt or dangling item.
type Problem struct {
	// Kind: "blob", "layer-link", "revision", "tag", "tag-index".
	Kind string
	// Path is the driver path of the item.
	Path string
	// What is wrong, e.g. "content does not match its digest".
	What string
	// Repaired is set when Repair removed it; RepairErr when that failed.
	Repaired  bool
	RepairErr error
	// Note marks what a write interrupted by a crash left, which the
	// server handles (VerifyResult.Notes): not corruption.
	Note bool
}

func (p Problem) String() string {
	s := fmt.Sprintf("%s %s: %s", p.Kind, p.Path, p.What)
	if p.Note {
		s = "note: " + s
	}
	switch {
	case p.RepairErr != nil:
		s += fmt.Sprintf(" (repair failed: %v)", p.RepairErr)
	case p.Repaired:
		s += " (removed)"
	}
	return s
}

// VerifyResult sums up a check.
type VerifyResult struct {
	Blobs, Links, Tags int
	Problems           []Problem
	// Notes are leftovers of interrupted writes that the server handles
	// (a tag without a current link beside its time record, a time record
	// of another digest): not problems. Repair removes those it can.
	Notes []Problem
}

type verifier struct {
	s     *Store
	opts  VerifyOptions
	repos []string

	mu  sync.Mutex // guards res and the Report calls
	res *VerifyResult
}

// Verify checks the whole cache. It returns an error only when the check
// itself could not run; what it finds is in the result.
func (s *Store) Verify(ctx context.Context, opts VerifyOptions) (VerifyResult, error) {
	var res VerifyResult
	repos, err := s.LinkedRepositories(ctx)
	if err != nil {
		return res, fmt.Errorf("verify: %w", err)
	}
	v := &verifier{s: s, opts: opts, res: &res, repos: repos}
	g, gctx := errgroup.WithContext(ctx)
	n := opts.Parallel
	if n <= 0 {
		n = 4
	}
	g.SetLimit(n)
	walkErr := s.WalkBlobs(gctx, func(b BlobRecord) error {
		g.Go(func() error {
			if opts.Progress != nil {
				opts.Progress(b)
			}
			return v.blob(gctx, b)
		})
		return nil
	})
	if err := errors.Join(g.Wait(), walkErr); err != nil {
		return res, fmt.Errorf("verify: %w", err)
	}
	for _, repo := range repos {
		if err := v.repo(ctx, repo); err != nil {
			return res, fmt.Errorf("verify: %s: %w", repo, err)
		}
	}
	return res, nil
}

func (v *verifier) problem(p Problem, repair func() error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.opts.Repair && repair != nil {
		if err := repair(); err != nil {
			p.RepairErr = err
		} else {
			p.Repaired = true
		}
	}
	if p.Note {
		v.res.Notes = append(v.res.Notes, p)
	} else {
		v.res.Problems = append(v.res.Problems, p)
	}
	if v.opts.Report != nil {
		v.opts.Report(p)
	}
}

// blob re-hashes one blob.
func (v *verifier) blob(ctx context.Context, b BlobRecord) error {
	v.mu.Lock()
	v.res.Blobs++
	v.mu.Unlock()
	if !b.Digest.Algorithm().Available() {
		return nil // an algorithm this build cannot hash
	}
	rc, _, err := v.s.OpenBlob(ctx, b.Digest)
	if errors.Is(err, ErrNotFound) {
		return nil // removed meanwhile
	}
	if err != nil {
		return err
	}
	vr := b.Digest.Verifier()
	_, err = io.Copy(vr, rc)
	if cerr := rc.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("reading %s: %w", b.Digest, err)
	}
	if !vr.Verified() {
		v.problem(Problem{Kind: "blob", Path: blobDataPath(b.Digest), What: "content does not match its digest"},
			func() error { _, err := v.s.RemoveBlob(ctx, b.Digest, v.repos); return err })
	}
	return nil
}

func (v *verifier) repo(ctx context.Context, repo string) error {
	layers, err := v.s.LayerLinks(ctx, repo)
	if err != nil {
		return err
	}
	for _, e := range layers {
		if err := v.link(ctx, "layer-link", e, true); err != nil {
			return err
		}
	}
	revs, err := v.s.RevisionLinks(ctx, repo)
	if err != nil {
		return err
	}
	for _, e := range revs {
		if err := v.link(ctx, "revision", e, true); err != nil {
			return err
		}
	}
	tags, err := v.s.list(ctx, tagsPath(repo))
	if err != nil {
		return err
	}
	for _, t := range tags {
		if err := v.tag(ctx, repo, path.Base(t)); err != nil {
			return err
		}
	}
	return nil
}

// link checks one link directory: its name, its content, and (blob) that
// the blob it names is here.
func (v *verifier) link(ctx context.Context, kind string, e LinkEntry, needBlob bool) error {
	v.res.Links++
	remove := func() error { return v.s.RemoveLink(ctx, e.Path) }
	if e.Digest == "" {
		v.problem(Problem{Kind: kind, Path: e.Path, What: "directory name is not a digest"}, remove)
		return nil
	}
	d, err := v.s.ReadLink(ctx, e.Path)
	switch {
	case errors.Is(err, ErrNotFound):
		v.problem(Problem{Kind: kind, Path: e.Path, What: "link file missing"}, remove)
		return nil
	case errors.Is(err, ErrCorruptLink):
		v.problem(Problem{Kind: kind, Path: e.Path, What: "content is not a digest"}, remove)
		return nil
	case err != nil:
		return err
	case d != e.Digest:
		v.problem(Problem{Kind: kind, Path: e.Path, What: fmt.Sprintf("names %s in the directory of %s", d, e.Digest)}, remove)
		return nil
	}
	if needBlob {
		if _, err := v.s.StatBlob(ctx, d); errors.Is(err, ErrNotFound) {
			v.problem(Problem{Kind: kind, Path: e.Path, What: "points at a missing blob " + d.String()}, remove)
		} else if err != nil {
			return err
		}
	}
	return nil
}

// tag checks a tag's current link, its fetched-at record and its index.
func (v *verifier) tag(ctx context.Context, repo, tag string) error {
	v.res.Tags++
	p := path.Join(tagsPath(repo), tag)
	remove := func() error { return v.s.RemoveTag(ctx, repo, tag) }
	d, err := v.s.ReadLink(ctx, tagCurrentLinkPath(repo, tag))
	switch {
	case errors.Is(err, ErrNotFound):
		return v.noCurrentLink(ctx, repo, tag)
	case errors.Is(err, ErrCorruptLink):
		v.problem(Problem{Kind: "tag", Path: p, What: "current link is not a digest"}, remove)
		return nil
	case err != nil:
		return err
	}
	ok, err := v.s.exists(ctx, revisionLinkPath(repo, d))
	if err != nil {
		return err
	}
	if ok {
		if _, err := v.s.StatBlob(ctx, d); errors.Is(err, ErrNotFound) {
			ok = false
		} else if err != nil {
			return err
		}
	}
	if !ok {
		v.problem(Problem{Kind: "tag", Path: p, What: "points at a missing manifest " + d.String()}, remove)
		return nil
	}
	rec, found, err := v.s.readTagRecord(ctx, repo, tag)
	switch {
	case errors.Is(err, ErrCorruptRecord):
		v.problem(Problem{Kind: "tag", Path: p, What: "fetched-at record does not parse"}, remove)
		return nil
	case err != nil:
		return err
	case found && !rec.belongsTo(d):
		// The record is written first: a retag a crash interrupted, or one
		// in progress. The server reads the tag as stale and revalidates
		// it, which writes both again.
		v.problem(Problem{Kind: "tag", Path: p, Note: true,
			What: fmt.Sprintf("fetched-at record names %s, the current link %s (an interrupted retag): revalidated at its next pull", rec.d, d)}, nil)
	}
	idx, err := v.s.TagIndexLinks(ctx, repo, tag)
	if err != nil {
		return err
	}
	for _, e := range idx {
		if err := v.link(ctx, "tag-index", e, false); err != nil {
			return err
		}
	}
	return nil
}

// noCurrentLink judges a tag directory without a current link. Beside a
// time record of Stowage's it is a first write a crash interrupted (on
// object storage the record is written first, and the filesystem of
// older versions did the same): the tag is not found, the next pull
// fetches it and writes it whole, so it is a note, removed by Repair once
// the record is older than InterruptedAge (a younger one may be a write in
// progress, which a removal would leave without its record). Without a
// record it is not Stowage's: a problem.
func (v *verifier) noCurrentLink(ctx context.Context, repo, tag string) error {
	p := path.Join(tagsPath(repo), tag)
	remove := func() error { return v.s.RemoveTag(ctx, repo, tag) }
	_, found, err := v.s.readTagRecord(ctx, repo, tag)
	if err != nil && !errors.Is(err, ErrCorruptRecord) {
		return err
	}
	if !found && v.s.root == "" {
		// An object store may still list a prefix whose objects are gone
		// (SeaweedFS keeps its directory entries): nothing is there.
		if left, err := v.s.list(ctx, p); err != nil || len(left) == 0 {
			return err
		}
	}
	if !found || err != nil {
		v.problem(Problem{Kind: "tag", Path: p, What: "no current link"}, remove)
		return nil
	}
	written, err := v.s.LinkModTime(ctx, tagFetchedPath(repo, tag))
	if errors.Is(err, ErrNotFound) {
		return nil // removed meanwhile
	}
	if err != nil {
		return err
	}
	age := v.opts.InterruptedAge
	if age <= 0 {
		age = LeftoverAge
	}
	if time.Since(written) < age {
		v.problem(Problem{Kind: "tag", Path: p, Note: true,
			What: "no current link yet (a first write in progress, or interrupted less than " + age.String() + " ago): not found until its next pull"}, nil)
		return nil
	}
	v.problem(Problem{Kind: "tag", Path: p, Note: true,
		What: "no current link (a first write a crash interrupted): not found until its next pull"}, remove)
	return nil
}
