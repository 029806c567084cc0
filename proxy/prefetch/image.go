package prefetch

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/containerd/platforms"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/errgroup"

	"github.com/stowage/stowage/proxy"
)

// Media types of manifest lists the engine walks.
const (
	dockerManifestList  = "application/vnd.docker.distribution.manifest.list.v2+json"
	dockerForeignLayer  = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
	ociNonDistributable = "application/vnd.oci.image.layer.nondistributable."
)

// maxDepth bounds nested indexes (an index of indexes is legal, deeper
// nesting is not seen in practice).
const maxDepth = 2

// walker collects what one image needs.
type walker struct {
	r      *run
	target proxy.Target
	rep    *ImageReport
	blobs  []ocispec.Descriptor
	seen   map[digest.Digest]bool
	config *ocispec.Descriptor // of a single-platform image, to learn its platform
	// configUp: the config was fetched from the upstream by the platform
	// check, before fetch (which then finds it cached).
	configUp bool
}

// imageOnce resolves one image and ensures its manifests and blobs.
func (r *run) imageOnce(ctx context.Context, it *item) (ImageReport, error) {
	rep := ImageReport{Ref: it.key(), Tag: it.ref.Tag, sizes: map[digest.Digest]int64{}}
	repo, err := r.e.f.CacheRepository(it.target)
	if err != nil {
		return rep, fmt.Errorf("%w: %w", ErrInvalidRequest, err)
	}
	rep.Repository = repo
	ref := it.ref.Tag
	if it.ref.Digest != "" {
		ref = it.ref.Digest.String() // a pinned digest wins over its tag
	}
	m, err := r.e.f.EnsureManifest(ctx, it.target, ref)
	if err != nil {
		return rep, fmt.Errorf("manifest %s: %w", ref, err)
	}
	rep.Digest, rep.MediaType = m.Digest, m.MediaType
	w := &walker{r: r, target: it.target, rep: &rep, seen: map[digest.Digest]bool{}}
	if err := w.walk(ctx, m, nil, 0); err != nil {
		return rep, err
	}
	if err := w.checkPlatform(ctx); err != nil {
		return rep, err
	}
	if err := w.fetch(ctx, it.key(), repo); err != nil {
		return rep, err
	}
	if w.config != nil && len(rep.Platforms) == 0 {
		if p, ok := r.configPlatform(ctx, w.config.Digest); ok {
			rep.Platforms = []string{p}
		}
	}
	return rep, nil
}

// manifestShape holds the fields that tell manifest kinds apart.
type manifestShape struct {
	MediaType string            `json:"mediaType"`
	Manifests []json.RawMessage `json:"manifests"`
	Config    json.RawMessage   `json:"config"`
	FSLayers  json.RawMessage   `json:"fsLayers"`
}

// walk records a manifest and descends: an index into its selected
// children, an image into its config and layers.
func (w *walker) walk(ctx context.Context, m *proxy.Manifest, plat *ocispec.Platform, depth int) error {
	w.rep.Manifests = append(w.rep.Manifests, m.Digest)
	var shape manifestShape
	if err := json.Unmarshal(m.Body, &shape); err != nil {
		return fmt.Errorf("%w: manifest %s: %w", ErrUnsupported, m.Digest, err)
	}
	switch {
	case m.MediaType == ocispec.MediaTypeImageIndex || m.MediaType == dockerManifestList || shape.Manifests != nil:
		if depth >= maxDepth {
			return fmt.Errorf("%w: indexes nested deeper than %d", ErrUnsupported, maxDepth)
		}
		return w.index(ctx, m, depth)
	case shape.Config != nil:
		if plat != nil {
			w.addPlatform(*plat)
		}
		return w.image(m, depth)
	case shape.FSLayers != nil:
		return fmt.Errorf("%w: %s is a Docker schema 1 manifest", ErrUnsupported, m.Digest)
	}
	return fmt.Errorf("%w: %s has media type %q", ErrUnsupported, m.Digest, m.MediaType)
}

// index fetches the children the platform filter selects (all without a
// filter) by digest. The index itself is already stored byte-identical.
func (w *walker) index(ctx context.Context, m *proxy.Manifest, depth int) error {
	var idx ocispec.Index
	if err := json.Unmarshal(m.Body, &idx); err != nil {
		return fmt.Errorf("%w: index %s: %w", ErrUnsupported, m.Digest, err)
	}
	var picked []ocispec.Descriptor
	for _, c := range idx.Manifests {
		if w.r.match == nil || (c.Platform != nil && w.r.match.Match(*c.Platform)) {
			picked = append(picked, c)
		}
	}
	if len(picked) == 0 {
		return fmt.Errorf("%w: index %s has no child for %s", ErrNoPlatform, m.Digest, w.r.match)
	}
	for _, c := range picked {
		if err := c.Digest.Validate(); err != nil {
			return fmt.Errorf("%w: index %s: child %q: %w", ErrUnsupported, m.Digest, c.Digest, err)
		}
		cm, err := w.r.e.f.EnsureManifest(ctx, w.target, c.Digest.String())
		if err != nil {
			return fmt.Errorf("manifest %s: %w", c.Digest, err)
		}
		if err := w.walk(ctx, cm, c.Platform, depth+1); err != nil {
			return err
		}
	}
	return nil
}

// image records an image manifest's config and layers.
func (w *walker) image(m *proxy.Manifest, depth int) error {
	var man ocispec.Manifest
	if err := json.Unmarshal(m.Body, &man); err != nil {
		return fmt.Errorf("%w: manifest %s: %w", ErrUnsupported, m.Digest, err)
	}
	if depth == 0 {
		cfg := man.Config
		w.config = &cfg
	}
	for _, d := range append([]ocispec.Descriptor{man.Config}, man.Layers...) {
		if err := d.Digest.Validate(); err != nil {
			return fmt.Errorf("%w: manifest %s: blob %q: %w", ErrUnsupported, m.Digest, d.Digest, err)
		}
		if foreign(d) {
			w.r.e.log.Info("skipping non-distributable layer", "ref", w.rep.Ref, "digest", d.Digest,
				"media_type", d.MediaType, "urls", len(d.URLs))
			w.rep.Skipped = append(w.rep.Skipped, d.Digest)
			continue
		}
		if w.seen[d.Digest] {
			continue
		}
		w.seen[d.Digest] = true
		w.blobs = append(w.blobs, d)
	}
	return nil
}

// checkPlatform applies the platform filter to a single-platform image, as
// containerd does when it pulls one: the config (small) is fetched first,
// and an image whose config names another OS or architecture fails with
// ErrNoPlatform before any layer is fetched. A config without a platform
// (an artifact) passes.
func (w *walker) checkPlatform(ctx context.Context) error {
	if w.config == nil || w.r.match == nil || foreign(*w.config) {
		return nil
	}
	up, err := w.r.ensure(ctx, w.target, w.config.Digest, nil)
	if err != nil {
		return fmt.Errorf("blob %s: %w", w.config.Digest, err)
	}
	w.configUp = up
	p, ok := w.r.configPlatform(ctx, w.config.Digest)
	if !ok {
		return nil
	}
	parsed, err := platforms.Parse(p)
	if err != nil || w.r.match.Match(parsed) {
		return nil
	}
	return fmt.Errorf("%w: image %s is %s, not %s", ErrNoPlatform, w.rep.Digest, p, w.r.match)
}

// foreign reports a layer that lives outside the registry.
func foreign(d ocispec.Descriptor) bool {
	return len(d.URLs) > 0 || d.MediaType == dockerForeignLayer || strings.HasPrefix(d.MediaType, ociNonDistributable)
}

func (w *walker) addPlatform(p ocispec.Platform) {
	s := platforms.Format(p)
	if !slices.Contains(w.rep.Platforms, s) {
		w.rep.Platforms = append(w.rep.Platforms, s)
	}
}

// fetch ensures the collected blobs with the run's shared dedup and bound.
func (w *walker) fetch(ctx context.Context, ref, repo string) error {
	var total int64
	for _, d := range w.blobs {
		total += d.Size
	}
	w.rep.Bytes = total
	w.r.obs.BlobsPlanned(ref, total)
	g, gctx := errgroup.WithContext(ctx)
	var mu sync.Mutex
	for _, d := range w.blobs {
		g.Go(func() error {
			// Bytes reported while downloading; BlobDone carries the rest.
			var streamed atomic.Int64
			progress := func(delta int64) {
				streamed.Add(delta)
				w.r.obs.BlobProgress(ref, delta)
			}
			owner, up, err := w.r.blob(gctx, w.target, repo, d.Digest, progress)
			if err != nil {
				return fmt.Errorf("blob %s: %w", d.Digest, err)
			}
			src := "cache"
			mu.Lock()
			w.rep.Blobs = append(w.rep.Blobs, d.Digest)
			w.rep.sizes[d.Digest] = d.Size
			if w.configUp && w.config != nil && d.Digest == w.config.Digest {
				owner, up = true, true // fetched by checkPlatform
			}
			if owner && up {
				w.rep.UpstreamBytes += d.Size
				src = "upstream"
			} else {
				w.rep.CachedBytes += d.Size
			}
			mu.Unlock()
			w.r.e.m.bytes.WithLabelValues(src).Add(float64(d.Size))
			w.r.obs.BlobDone(ref, max(d.Size-streamed.Load(), 0), owner && up)
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	slices.Sort(w.rep.Blobs)
	return nil
}

// configPlatform reads a (small) image config from the store to report
// the platform of a single-platform image.
func (r *run) configPlatform(ctx context.Context, d digest.Digest) (string, bool) {
	if r.e.store == nil {
		return "", false
	}
	rc, _, err := r.e.store.OpenBlob(ctx, d)
	if err != nil {
		return "", false
	}
	defer rc.Close()
	var p ocispec.Platform
	if err := json.NewDecoder(io.LimitReader(rc, 1<<20)).Decode(&p); err != nil || p.OS == "" {
		return "", false
	}
	return platforms.Format(p), true
}
