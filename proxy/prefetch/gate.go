package prefetch

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/containerd/platforms"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/stowage/stowage/storage"
)

// Gate is the answer of the rollout gate: is every image a run named fully
// in the cache, so that a rollout pulling them needs nothing from the
// upstreams?
type Gate struct {
	// Complete is true when every image is cached and no list entry was
	// bad.
	Complete bool `json:"complete"`
	// Images is the number of images checked; Cached how many of them are
	// fully cached.
	Images int `json:"images"`
	Cached int `json:"cached"`
	// Missing names each image that is not fully cached, and why.
	Missing []Missing `json:"missing,omitempty"`
	// Problems are the list entries that could not be used (a bad image
	// reference, a rule that could not be expanded): their images are not
	// in the cache either.
	Problems []string `json:"problems,omitempty"`
}

// Missing is an image that is not fully cached.
type Missing struct {
	// Ref is the image as listed.
	Ref string `json:"ref"`
	// Reason says what is missing, or why the image failed.
	Reason string `json:"reason"`
}

// WriteText writes the gate's verdict: one line, then one line per missing
// image and per problem.
func (g *Gate) WriteText(w io.Writer) error {
	var b strings.Builder
	if g.Complete {
		fmt.Fprintf(&b, "rollout gate: ready: all %d images are fully cached\n", g.Images)
	} else {
		fmt.Fprintf(&b, "rollout gate: NOT READY: %d of %d images fully cached, %d missing, %d problems\n",
			g.Cached, g.Images, len(g.Missing), len(g.Problems))
	}
	for _, m := range g.Missing {
		fmt.Fprintf(&b, "  missing: %s: %s\n", m.Ref, m.Reason)
	}
	for _, p := range g.Problems {
		fmt.Fprintf(&b, "  problem: %s\n", p)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// errNotCached marks content the gate did not find in the cache.
var errNotCached = errors.New("not in the cache")

// Verify answers the rollout gate for a finished run: it checks in the
// store, not in the report, that every image of rep is fully cached — the
// tag (for an image listed by tag), every manifest for the run's
// platforms, and every config and layer blob with its size, linked into
// the image's repository — so that content evicted or lost since the run
// counts as missing. Images that failed and list problems make the gate
// fail with their error. An image with no images at all is not complete.
// The error is for a store that cannot answer (or a cancelled context),
// not for missing content.
func (e *Engine) Verify(ctx context.Context, rep *Report) (*Gate, error) {
	if e.store == nil {
		return nil, errors.New("prefetch: the rollout gate needs the cache store")
	}
	match, err := platformMatcher(rep.Platforms)
	if err != nil {
		return nil, err
	}
	g := &Gate{Images: len(rep.Images), Problems: rep.Problems}
	v := verifier{store: e.store, match: match}
	for _, im := range rep.Images {
		reason := im.Error
		if reason == "" {
			if err := v.image(ctx, im); err != nil {
				if ctx.Err() != nil {
					return nil, ctx.Err()
				}
				reason = err.Error()
			}
		}
		if reason != "" {
			g.Missing = append(g.Missing, Missing{Ref: im.Ref, Reason: reason})
			continue
		}
		g.Cached++
	}
	g.Complete = g.Images > 0 && g.Cached == g.Images && len(g.Problems) == 0
	return g, nil
}

// verifier walks one image's content in the store.
type verifier struct {
	store *storage.Store
	match platforms.MatchComparer // nil: every platform
}

// image checks one image the run reported as fetched.
func (v verifier) image(ctx context.Context, im ImageReport) error {
	if im.Repository == "" || im.Digest == "" {
		return errors.New("the run did not resolve it")
	}
	d := im.Digest
	if im.Tag != "" && !strings.Contains(im.Ref, "@") {
		// Listed by tag: a pull asks for the tag, so the tag must resolve
		// in the cache; walk what it names now.
		tag, err := v.store.GetTag(ctx, im.Repository, im.Tag)
		if err != nil {
			return fmt.Errorf("tag %s: %w", im.Tag, notCached(err))
		}
		d = tag.Digest
	}
	return v.manifest(ctx, im.Repository, d, 0)
}

// manifest checks a manifest and what it needs: the selected children of
// an index, the config and layers of an image.
func (v verifier) manifest(ctx context.Context, repo string, d digest.Digest, depth int) error {
	body, err := v.store.GetManifest(ctx, repo, d)
	if err != nil {
		return fmt.Errorf("manifest %s: %w", d, notCached(err))
	}
	var shape manifestShape
	if err := json.Unmarshal(body, &shape); err != nil {
		return fmt.Errorf("%w: manifest %s: %w", ErrUnsupported, d, err)
	}
	if shape.Manifests != nil || shape.MediaType == ocispec.MediaTypeImageIndex || shape.MediaType == dockerManifestList {
		return v.index(ctx, repo, d, body, depth)
	}
	if shape.Config == nil {
		return fmt.Errorf("%w: manifest %s is neither an index nor an image", ErrUnsupported, d)
	}
	var man ocispec.Manifest
	if err := json.Unmarshal(body, &man); err != nil {
		return fmt.Errorf("%w: manifest %s: %w", ErrUnsupported, d, err)
	}
	for _, b := range append([]ocispec.Descriptor{man.Config}, man.Layers...) {
		if foreign(b) {
			continue // the engine skips them too: the runtime pulls them from their URLs
		}
		if err := v.blob(ctx, repo, b); err != nil {
			return err
		}
	}
	return nil
}

// index checks the children the platform filter selects.
func (v verifier) index(ctx context.Context, repo string, d digest.Digest, body []byte, depth int) error {
	if depth >= maxDepth {
		return fmt.Errorf("%w: indexes nested deeper than %d", ErrUnsupported, maxDepth)
	}
	var idx ocispec.Index
	if err := json.Unmarshal(body, &idx); err != nil {
		return fmt.Errorf("%w: index %s: %w", ErrUnsupported, d, err)
	}
	picked := 0
	for _, c := range idx.Manifests {
		if v.match != nil && (c.Platform == nil || !v.match.Match(*c.Platform)) {
			continue
		}
		picked++
		if err := c.Digest.Validate(); err != nil {
			return fmt.Errorf("%w: index %s: child %q: %w", ErrUnsupported, d, c.Digest, err)
		}
		if err := v.manifest(ctx, repo, c.Digest, depth+1); err != nil {
			if c.Platform != nil {
				return fmt.Errorf("%s: %w", platforms.Format(*c.Platform), err)
			}
			return err
		}
	}
	if picked == 0 {
		return fmt.Errorf("%w: index %s has no child for %s", ErrNoPlatform, d, v.match)
	}
	return nil
}

// blob checks that a blob is stored with its size and linked into repo.
func (v verifier) blob(ctx context.Context, repo string, b ocispec.Descriptor) error {
	if err := b.Digest.Validate(); err != nil {
		return fmt.Errorf("%w: blob %q: %w", ErrUnsupported, b.Digest, err)
	}
	info, err := v.store.StatBlob(ctx, b.Digest)
	if err != nil {
		return fmt.Errorf("blob %s: %w", b.Digest, notCached(err))
	}
	if b.Size > 0 && info.Size != b.Size {
		return fmt.Errorf("blob %s: stored with %d bytes, the manifest says %d", b.Digest, info.Size, b.Size)
	}
	linked, err := v.store.BlobLinked(ctx, repo, b.Digest)
	if err != nil {
		return fmt.Errorf("blob %s: %w", b.Digest, err)
	}
	if !linked {
		return fmt.Errorf("blob %s: not linked into %s", b.Digest, repo)
	}
	return nil
}

// notCached maps the store's not-found to errNotCached and keeps other
// errors.
func notCached(err error) error {
	if errors.Is(err, storage.ErrNotFound) {
		return errNotCached
	}
	return err
}
