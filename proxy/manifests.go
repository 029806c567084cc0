package proxy

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"

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
	if r.Method != http.MethodHead {
		_, _ = w.Write(m.body)
	}
}

// manifestByDigest serves an immutable manifest: memory, then storage,
// then the upstream (verified against the digest, stored).
func (p *Proxy) manifestByDigest(ctx context.Context, q *request) (*resolvedManifest, error) {
	if cm, ok := p.mem.manifest(q.cacheRepo, q.dgst); ok {
		p.m.hits.WithLabelValues("manifest").Inc()
		return &resolvedManifest{dgst: q.dgst, mediaType: cm.mediaType, body: cm.body}, nil
	}
	body, err := p.store.GetManifest(ctx, q.cacheRepo, q.dgst)
	if err == nil {
		p.m.hits.WithLabelValues("manifest").Inc()
		m := &resolvedManifest{dgst: q.dgst, mediaType: detectMediaType(body), body: body}
		p.mem.putManifest(q.cacheRepo, q.dgst, m.mediaType, body)
		return m, nil
	}
	if !errors.Is(err, storage.ErrNotFound) {
		return nil, err
	}
	p.m.misses.WithLabelValues("manifest").Inc()
	m, err := p.fetchManifest(ctx, q, q.dgst.String())
	if err != nil && upstream.Temporary(err) {
		// Held for another repository of the same upstream: the bytes are
		// content-addressed, serve them while the upstream is away.
		if body, aerr := p.store.GetManifestAny(ctx, q.dgst); aerr == nil {
			p.log.Warn("upstream unavailable; serving manifest cached for another repository",
				"repo", q.cacheRepo, "digest", q.dgst, "err", err)
			return &resolvedManifest{dgst: q.dgst, mediaType: detectMediaType(body), body: body}, nil
		}
	}
	return m, err
}

// fetchManifest gets a manifest from the upstream once per (repo, ref) at a
// time, verifies it and stores it. For a tag it also records the tag.
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
			return nil, err
		}
		m, err := p.verifyManifest(um, ref)
		if err != nil {
			return nil, err
		}
		if err := p.store.PutManifest(fctx, q.cacheRepo, m.dgst, m.body); err != nil {
			return nil, err
		}
		p.mem.putManifest(q.cacheRepo, m.dgst, m.mediaType, m.body)
		if _, isDigest := digestRef(ref); !isDigest {
			t := storage.Tag{Digest: m.dgst, FetchedAt: p.now()}
			if err := p.store.PutTag(fctx, q.cacheRepo, ref, m.dgst, t.FetchedAt); err != nil {
				return nil, err
			}
			p.mem.putTag(q.cacheRepo, ref, t)
		}
		return m, nil
	})
	if err != nil {
		return nil, err
	}
	return v.(*resolvedManifest), nil
}

// verifyManifest checks upstream manifest bytes: size cap, digest (the one
// asked for, and the one the upstream claimed), media type.
func (p *Proxy) verifyManifest(um *upstream.Manifest, ref string) (*resolvedManifest, error) {
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
	mt := um.MediaType
	if mt == "" || mt == "application/octet-stream" || mt == "text/plain" {
		mt = detectMediaType(um.Body)
	}
	return &resolvedManifest{dgst: want, mediaType: mt, body: um.Body}, nil
}

func digestRef(ref string) (digest.Digest, bool) {
	d, err := digest.Parse(ref)
	return d, err == nil
}
