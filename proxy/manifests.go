package proxy

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"github.com/distribution/distribution/v3/registry/api/errcode"
	"github.com/opencontainers/go-digest"

	"github.com/stowage/stowage/storage"
	"github.com/stowage/stowage/upstream"
)

// resolvedManifest is what a manifest response needs.
type resolvedManifest struct {
	dgst      digest.Digest
	mediaType string
	body      []byte
}

// serveManifest answers GET and HEAD for a manifest by tag or digest.
func (p *Proxy) serveManifest(w http.ResponseWriter, r *http.Request, q *request) {
	var (
		m   *resolvedManifest
		err error
	)
	if q.dgst != "" {
		m, err = p.manifestByDigest(r.Context(), q)
	} else {
		m, err = p.manifestByTag(r.Context(), q)
	}
	if err != nil {
		p.writeError(w, r, fromUpstream(q.host, kindManifest, err))
		return
	}
	if !acceptsManifest(r.Header, m.mediaType) {
		p.writeError(w, r, newAPIError(errcode.ErrorCodeManifestUnknown,
			"OCI manifest found, but the Accept header does not list OCI manifests", nil))
		return
	}
	p.cacheHooks().Touched(m.dgst)
	h := w.Header()
	h.Set("Content-Type", m.mediaType)
	h.Set("Docker-Content-Digest", m.dgst.String())
	h.Set("Content-Length", strconv.Itoa(len(m.body)))
	h.Set("ETag", `"`+m.dgst.String()+`"`)
	if match := r.Header.Get("If-None-Match"); match != "" && (match == `"`+m.dgst.String()+`"` || match == m.dgst.String()) {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	w.WriteHeader(http.StatusOK)
	p.countPull(r, q)
	if r.Method != http.MethodHead {
		_, _ = w.Write(m.body)
	}
}

// manifestByDigest serves an immutable manifest: memory, then storage,
// then the upstream (verified against the digest, stored). Stored bytes that
// fail their digest or do not parse as a manifest are fetched again.
func (p *Proxy) manifestByDigest(ctx context.Context, q *request) (*resolvedManifest, error) {
	if cm, ok := p.mem.manifest(q.cacheRepo, q.dgst); ok {
		p.m.hits.WithLabelValues("manifest").Inc()
		return &resolvedManifest{dgst: q.dgst, mediaType: cm.mediaType, body: cm.body}, nil
	}
	m, err := p.storedManifest(ctx, q.cacheRepo, q.dgst)
	switch {
	case err == nil:
		p.m.hits.WithLabelValues("manifest").Inc()
		p.mem.putManifest(q.cacheRepo, q.dgst, m.mediaType, m.body)
		return m, nil
	case errors.Is(err, storage.ErrCorrupt), errors.Is(err, errNotManifest), errors.Is(err, storage.ErrTooLarge):
		p.log.Warn("stored manifest is unusable; fetching it again", "repo", q.cacheRepo, "digest", q.dgst, "err", err)
	case !errors.Is(err, storage.ErrNotFound):
		return nil, err
	}
	p.m.misses.WithLabelValues("manifest").Inc()
	m, err = p.fetchManifest(ctx, q, q.dgst.String())
	if err == nil || upstreamRefused(err) {
		return m, err
	}
	p.down.mark(q.host, p.now(), err)
	// Held for another repository: the bytes are content-addressed, serve
	// them while the upstream is away, but only if they are a manifest: the
	// size is checked before any read and the bytes must parse as a
	// manifest, so a cached layer is neither read into memory nor served.
	// (No revision link in some other repository is required: finding one
	// means walking every repository, per request, while the upstream is
	// down; the parse check is what tells a manifest from a blob.)
	am, aerr := p.storedManifest(ctx, "", q.dgst)
	switch {
	case aerr == nil:
		p.log.Warn("upstream unavailable; serving manifest cached for another repository",
			"repo", q.cacheRepo, "digest", q.dgst, "err", err)
		return am, nil
	case errors.Is(aerr, errNotManifest), errors.Is(aerr, storage.ErrTooLarge):
		return nil, newAPIError(errcode.ErrorCodeManifestUnknown, "manifest unknown",
			fmt.Errorf("%w: cached content %s is not a manifest (%w); upstream: %w", storage.ErrNotFound, q.dgst, aerr, err))
	}
	return nil, err
}

// storedManifest reads and validates a manifest from storage (repo "" for
// any repository), never reading more than the manifest size cap.
func (p *Proxy) storedManifest(ctx context.Context, repo string, d digest.Digest) (*resolvedManifest, error) {
	body, err := p.store.ReadManifest(ctx, repo, d, p.cfg.Cache.MaxManifestSize)
	if err != nil {
		return nil, err
	}
	mt, err := manifestMediaType(body)
	if err != nil {
		return nil, fmt.Errorf("stored %s: %w", d, err)
	}
	return &resolvedManifest{dgst: d, mediaType: mt, body: body}, nil
}

// fetchManifest gets a manifest from the upstream once per (repo, ref) at a
// time, verifies it and stores it. For a tag it also records the tag. A
// manifest that cannot be stored (a full disk) is served anyway.
func (p *Proxy) fetchManifest(ctx context.Context, q *request, ref string) (*resolvedManifest, error) {
	key := q.cacheRepo + "@" + ref
	v, err, _ := p.manifestFlight.Do(key, func() (any, error) {
		// Detached from the first caller: its disconnect must not fail the
		// others waiting on the same fetch.
		fctx, cancel := p.upstreamCtx(context.WithoutCancel(ctx), q.host)
		defer cancel()
		reg, err := p.upstream(q.host)
		if err != nil {
			return nil, err
		}
		um, err := reg.GetManifest(fctx, q.repo, ref, nil)
		if err != nil {
			p.m.upstreamErrors.WithLabelValues(q.host, errorClass(err)).Inc()
			return nil, err
		}
		m, err := p.verifyManifest(q.host, um, ref)
		if err != nil {
			return nil, err
		}
		p.down.ok(q.host)
		p.mem.putManifest(q.cacheRepo, m.dgst, m.mediaType, m.body)
		if err := p.store.PutManifest(fctx, q.cacheRepo, m.dgst, m.body); err != nil {
			p.storeFailed("manifest", q, ref, err)
			return m, nil
		}
		p.cacheHooks().ManifestAdded(m.dgst, int64(len(m.body)))
		if _, isDigest := digestRef(ref); !isDigest {
			now := p.now()
			if err := p.store.PutTag(fctx, q.cacheRepo, ref, m.dgst, now); err != nil {
				p.mem.forgetTag(q.cacheRepo, ref)
				p.storeFailed("tag", q, ref, err)
				return m, nil
			}
			p.mem.putTag(q.cacheRepo, ref, storage.Tag{Digest: m.dgst, FetchedAt: now}, now)
			p.tagConfirmed(fctx, q.cacheRepo, ref, m.dgst, now, true)
		}
		return m, nil
	})
	if err != nil {
		return nil, err
	}
	return v.(*resolvedManifest), nil
}

// storeFailed logs and counts a manifest the upstream delivered but the
// store could not keep: the client is served from the upstream's bytes,
// and the failure is the store's, never reported as the upstream's.
func (p *Proxy) storeFailed(kind string, q *request, ref string, err error) {
	p.m.manifest.storeFailures.WithLabelValues(kind).Inc()
	p.noteStorageError(err)
	p.log.Error("cannot store manifest; serving it uncached", "kind", kind,
		"repo", q.cacheRepo, "ref", ref, "err", err)
}

// verifyManifest checks upstream manifest bytes: size cap, digest (the one
// asked for, and the one the upstream claimed), and that they are a
// manifest of a known media type. The type served is the one the bytes
// declare (manifestMediaType), so it does not change after a restart.
func (p *Proxy) verifyManifest(host string, um *upstream.Manifest, ref string) (*resolvedManifest, error) {
	if int64(len(um.Body)) > p.cfg.Cache.MaxManifestSize {
		return nil, fmt.Errorf("%w: %d bytes", upstream.ErrTooLarge, len(um.Body))
	}
	want, isDigest := digestRef(ref)
	if !isDigest {
		want = um.Digest
	}
	if want == "" || want.Validate() != nil {
		want = digest.FromBytes(um.Body)
	}
	if !want.Algorithm().Available() || want.Algorithm().FromBytes(um.Body) != want {
		return nil, fmt.Errorf("%w: manifest %s", upstream.ErrDigestMismatch, want)
	}
	mt, err := manifestMediaType(um.Body)
	if err == nil && !plausibleManifestHeader(um.MediaType) {
		err = fmt.Errorf("%w: Content-Type %q", errNotManifest, um.MediaType)
	}
	if err != nil {
		e := newAPIError(errcode.ErrorCodeManifestInvalid,
			fmt.Sprintf("upstream %s answered %s with something that is not a manifest (Content-Type %q); "+
				"an intercepting proxy may be in the way", host, ref, um.MediaType),
			fmt.Errorf("%w: %w", upstream.ErrInvalid, err))
		e.status = http.StatusBadGateway
		return nil, e
	}
	return &resolvedManifest{dgst: want, mediaType: mt, body: um.Body}, nil
}

func digestRef(ref string) (digest.Digest, bool) {
	d, err := digest.Parse(ref)
	return d, err == nil
}
