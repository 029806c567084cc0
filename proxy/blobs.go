package proxy

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/stowage/stowage/storage"
	"github.com/stowage/stowage/upstream"
)

// serveBlob answers GET and HEAD for a blob: from the cache when committed,
// else by joining (or starting) the one fill for its digest. HEAD never
// starts a download.
func (p *Proxy) serveBlob(w http.ResponseWriter, r *http.Request, q *request) {
	ctx := r.Context()
	rs, info, err := p.store.OpenBlob(ctx, q.dgst)
	switch {
	case err == nil:
		defer rs.Close()
		if err := p.ensureBlobLinked(ctx, q); err != nil {
			p.writeError(w, r, fromUpstream(q.host, kindBlob, err))
			return
		}
		p.m.hits.WithLabelValues("blob").Inc()
		setBlobHeaders(w.Header(), q)
		http.ServeContent(w, r, "", info.ModTime, rs)
		return
	case !errors.Is(err, storage.ErrNotFound):
		p.writeError(w, r, err)
		return
	}
	p.m.misses.WithLabelValues("blob").Inc()
	if r.Method == http.MethodHead {
		p.headBlobMiss(w, r, q)
		return
	}
	f, held, err := p.fills.join(q, true)
	if err != nil {
		p.writeError(w, r, err)
		return
	}
	p.streamFill(w, r, q, f, held)
}

// ensureBlobLinked allows a blob that the cache holds for another
// repository to be served under this one once the upstream confirms the
// repository has it (a digest is no password). When the upstream cannot be
// asked, the content-addressed copy is served.
func (p *Proxy) ensureBlobLinked(ctx context.Context, q *request) error {
	linked, err := p.store.BlobLinked(ctx, q.cacheRepo, q.dgst)
	if err != nil || linked {
		return err
	}
	reg, err := p.upstream(q.host)
	if err != nil {
		return err
	}
	uctx, cancel := p.upstreamCtx(ctx, q.host)
	defer cancel()
	if _, err := reg.HeadBlob(uctx, q.repo, q.dgst); err != nil && !upstream.Temporary(err) {
		return err
	}
	return p.store.LinkBlob(ctx, q.cacheRepo, q.dgst)
}

func setBlobHeaders(h http.Header, q *request) {
	h.Set("Docker-Content-Digest", q.dgst.String())
	h.Set("Content-Type", "application/octet-stream")
	h.Set("ETag", `"`+q.dgst.String()+`"`)
	h.Set("Cache-Control", "max-age=31536000")
}

// headBlobMiss answers HEAD for an uncached blob from a running fill or an
// upstream HEAD, without downloading anything.
func (p *Proxy) headBlobMiss(w http.ResponseWriter, r *http.Request, q *request) {
	reg, err := p.upstream(q.host)
	if err != nil {
		p.writeError(w, r, fromUpstream(q.host, kindBlob, err))
		return
	}
	ctx, cancel := p.upstreamCtx(r.Context(), q.host)
	defer cancel()
	size, err := reg.HeadBlob(ctx, q.repo, q.dgst)
	if err != nil {
		p.writeError(w, r, fromUpstream(q.host, kindBlob, err))
		return
	}
	setBlobHeaders(w.Header(), q)
	w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
	w.Header().Set("Accept-Ranges", "bytes")
	w.WriteHeader(http.StatusOK)
}

// streamFill serves a client from a fill as its bytes arrive. Errors before
// the first byte become OCI errors; an error after it aborts the response
// so the client sees a cut-short body, never a complete wrong one.
func (p *Proxy) streamFill(w http.ResponseWriter, r *http.Request, q *request, f *fill, held bool) {
	ctx := r.Context()
	defer func() {
		if held {
			f.release() // no reader took the reference
		}
	}()
	size, cached, err := f.waitSize(ctx)
	if err != nil && held && ctx.Err() == nil {
		// The fill ended in error after verifying every byte (the commit
		// failed): the held reference keeps those bytes readable.
		if n, ok := f.verifiedSize(); ok {
			size, cached, err = n, false, nil
		}
	}
	if err != nil {
		if ctx.Err() != nil {
			return // the client left
		}
		p.writeError(w, r, fromUpstream(q.host, kindBlob, err))
		return
	}
	if size < 0 {
		// The upstream sent no length: wait for the verified blob.
		if err := f.wait(ctx); err != nil {
			if ctx.Err() == nil {
				p.writeError(w, r, fromUpstream(q.host, kindBlob, err))
			}
			return
		}
		cached = true
	}
	var rd *fillReader
	switch {
	case cached:
	case held:
		rd, held = f.heldReader(ctx, size), false // the reader owns the reference now
	default:
		rd, _ = f.newReader(ctx, size) // nil once the fill has ended
	}
	if rd == nil {
		if err := f.wait(ctx); err != nil {
			if ctx.Err() == nil {
				p.writeError(w, r, fromUpstream(q.host, kindBlob, err))
			}
			return
		}
		p.serveStoreAfterFill(w, r, q)
		return
	}
	defer rd.Close()
	setBlobHeaders(w.Header(), q)
	http.ServeContent(w, r, "", time.Time{}, rd)
	if rd.err != nil && ctx.Err() == nil {
		p.log.Warn("blob response cut short", "digest", q.dgst, "repo", q.cacheRepo, "err", rd.err)
		// Make the truncation visible on every protocol.
		panic(http.ErrAbortHandler)
	}
	if rd.err == nil {
		if err := p.store.LinkBlob(context.WithoutCancel(ctx), q.cacheRepo, q.dgst); err != nil {
			p.log.Warn("link blob", "repo", q.cacheRepo, "digest", q.dgst, "err", err)
		}
	}
}

func (p *Proxy) serveStoreAfterFill(w http.ResponseWriter, r *http.Request, q *request) {
	rs, info, err := p.store.OpenBlob(r.Context(), q.dgst)
	if err != nil {
		p.writeError(w, r, fromUpstream(q.host, kindBlob, err))
		return
	}
	defer rs.Close()
	if err := p.store.LinkBlob(r.Context(), q.cacheRepo, q.dgst); err != nil {
		p.writeError(w, r, err)
		return
	}
	setBlobHeaders(w.Header(), q)
	http.ServeContent(w, r, "", info.ModTime, rs)
}

// fetchBlob makes sure a blob is in the cache, sharing the one fill with
// any client pulling it at the same time. It is the path prefetch uses.
// It reports whether the bytes came from the upstream.
func (p *Proxy) fetchBlob(ctx context.Context, q *request, progress func(int64)) (fromUpstream bool, err error) {
	if _, err := p.store.StatBlob(ctx, q.dgst); err == nil {
		return false, p.store.LinkBlob(ctx, q.cacheRepo, q.dgst)
	} else if !errors.Is(err, storage.ErrNotFound) {
		return false, err
	}
	f, _, err := p.fills.join(q, false)
	if err != nil {
		return false, err
	}
	if err := f.follow(ctx, progress); err != nil {
		return false, err
	}
	f.mu.Lock()
	cached := f.cached
	f.mu.Unlock()
	return !cached, p.store.LinkBlob(ctx, q.cacheRepo, q.dgst)
}

var _ io.ReadSeeker = (*fillReader)(nil)
