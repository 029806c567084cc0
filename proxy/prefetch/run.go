package prefetch

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/containerd/platforms"
	"github.com/opencontainers/go-digest"
	"golang.org/x/sync/errgroup"
	"golang.org/x/sync/semaphore"

	"github.com/stowage/stowage/proxy"
	"github.com/stowage/stowage/storage"
	"github.com/stowage/stowage/upstream"
)

// run is the state of one Engine.Run: the blob set shared by its images.
type run struct {
	e     *Engine
	match platforms.MatchComparer // nil: every platform
	obs   Observer
	sem   *semaphore.Weighted // bounds blob downloads

	mu    sync.Mutex
	blobs map[digest.Digest]*blobEntry
}

// blobEntry is one digest's EnsureBlob within a run; later images wait
// for it instead of calling EnsureBlob again.
type blobEntry struct {
	done         chan struct{}
	repo         string // cache repository the blob was ensured under
	fromUpstream bool
	err          error
}

func newRun(e *Engine, match platforms.MatchComparer, obs Observer) *run {
	e.m.runs.Inc()
	return &run{e: e, match: match, obs: obs, sem: semaphore.NewWeighted(int64(e.o.concurrency)),
		blobs: map[digest.Digest]*blobEntry{}}
}

// fetchAll fetches the images with bounded concurrency, keeping going past
// failures. The reports are in item order.
func (r *run) fetchAll(ctx context.Context, items []*item) []ImageReport {
	out := make([]ImageReport, len(items))
	var g errgroup.Group
	// Twice the blob bound: while some images wait for blobs, others
	// resolve manifests, so the download slots stay busy.
	g.SetLimit(2 * r.e.o.concurrency)
	for i, it := range items {
		g.Go(func() error {
			out[i] = r.image(ctx, it)
			return nil
		})
	}
	_ = g.Wait()
	return out
}

// image fetches one image with bounded retries and backoff.
func (r *run) image(ctx context.Context, it *item) ImageReport {
	start := time.Now()
	r.obs.ImageStarted(it.key())
	var rep ImageReport
	wait := r.e.o.backoff
	for attempt := 1; ; attempt++ {
		var err error
		rep, err = r.imageOnce(ctx, it)
		rep.Attempts = attempt
		if err == nil {
			break
		}
		rep.Error = err.Error()
		if attempt >= r.e.o.attempts || !retryable(ctx, err) {
			break
		}
		r.e.log.Warn("prefetch image failed; retrying", "ref", it.key(), "attempt", attempt, "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(wait):
		}
		wait *= 2
	}
	rep.Duration = time.Since(start)
	rep.pins = it.pins
	if rep.Error != "" {
		r.e.m.images.WithLabelValues("failed").Inc()
		r.e.log.Error("prefetch image failed", "ref", it.key(), "attempts", rep.Attempts, "err", rep.Error)
	} else {
		r.e.m.images.WithLabelValues("done").Inc()
		r.e.log.Info("prefetched image", "ref", it.key(), "digest", rep.Digest, "bytes", rep.Bytes,
			"upstream_bytes", rep.UpstreamBytes, "duration", rep.Duration.Round(time.Millisecond).String())
	}
	r.obs.ImageDone(rep)
	return rep
}

// retryable is false for answers a retry cannot change.
func retryable(ctx context.Context, err error) bool {
	if ctx.Err() != nil {
		return false
	}
	for _, perm := range []error{upstream.ErrNotFound, upstream.ErrDenied, upstream.ErrUnauthorized,
		upstream.ErrCertificate, ErrNoPlatform, ErrUnsupported, ErrInvalidRequest} {
		if errors.Is(err, perm) {
			return false
		}
	}
	return true
}

// blob ensures one blob once per run. The first image to ask calls
// EnsureBlob (under the download bound); the others wait for it and only
// link the blob into their own repository. owner reports whether this call
// did the EnsureBlob.
func (r *run) blob(ctx context.Context, t proxy.Target, repo string, d digest.Digest, progress func(int64)) (owner, fromUpstream bool, err error) {
	for {
		r.mu.Lock()
		e, ok := r.blobs[d]
		if !ok {
			e = &blobEntry{done: make(chan struct{}), repo: repo}
			r.blobs[d] = e
		}
		r.mu.Unlock()
		if !ok {
			e.fromUpstream, e.err = r.ensure(ctx, t, d, progress)
			if e.err != nil {
				// Forget the failure: a retry (or another image) tries again.
				r.mu.Lock()
				delete(r.blobs, d)
				r.mu.Unlock()
			}
			close(e.done)
			return true, e.fromUpstream, e.err
		}
		select {
		case <-e.done:
		case <-ctx.Done():
			return false, false, ctx.Err()
		}
		if e.err != nil {
			if errors.Is(e.err, context.Canceled) || errors.Is(e.err, context.DeadlineExceeded) {
				continue // the owner gave up, not the blob: try ourselves
			}
			return false, false, e.err
		}
		if e.repo != repo && r.e.store != nil {
			// The same semantics as EnsureBlob on a cached blob: the
			// manifest this image fetched from its repository names it.
			if err := r.e.store.LinkBlob(ctx, repo, d); err != nil {
				return false, false, err
			}
		}
		return false, false, nil
	}
}

func (r *run) ensure(ctx context.Context, t proxy.Target, d digest.Digest, progress func(int64)) (bool, error) {
	if err := r.sem.Acquire(ctx, 1); err != nil {
		return false, err
	}
	defer r.sem.Release(1)
	return r.e.f.EnsureBlob(ctx, t, d, progress)
}

// writePins records, per pin name, the successful images that name it.
func (r *run) writePins(ctx context.Context, rep *Report) error {
	pins := map[string]*storage.Pin{}
	partial := map[string]bool{}
	var order []string
	for _, im := range rep.Images {
		for _, name := range im.pins {
			p, ok := pins[name]
			if !ok {
				p = &storage.Pin{Name: name, Updated: time.Now()}
				pins[name] = p
				order = append(order, name)
			}
			if im.Error != "" {
				partial[name] = true
				continue
			}
			p.Images = append(p.Images, storage.PinnedImage{Repository: im.Repository, Tag: im.Tag, Digest: im.Digest})
			p.Blobs = append(p.Blobs, im.Manifests...)
			p.Blobs = append(p.Blobs, im.Blobs...)
		}
	}
	var errs []error
	for _, name := range order {
		p := pins[name]
		if partial[name] {
			// An image failed this time: keep what the previous pin held
			// rather than unpin an image because of a transient error.
			prev, err := r.e.store.GetPin(ctx, name)
			if err != nil && !errors.Is(err, storage.ErrNotFound) {
				errs = append(errs, err)
				continue
			}
			p.Images = mergeImages(p.Images, prev.Images)
			p.Blobs = append(p.Blobs, prev.Blobs...)
		}
		if len(p.Images) == 0 {
			continue
		}
		if err := r.e.store.PutPin(ctx, *p); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// mergeImages adds the images of old that cur lacks (by repository and tag).
func mergeImages(cur, old []storage.PinnedImage) []storage.PinnedImage {
	have := map[string]bool{}
	for _, im := range cur {
		have[im.Repository+":"+im.Tag+"@"+string(im.Digest)] = true
	}
	for _, im := range old {
		if !have[im.Repository+":"+im.Tag+"@"+string(im.Digest)] {
			cur = append(cur, im)
		}
	}
	return cur
}
