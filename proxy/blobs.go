package proxy

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/stowage/stowage/proxy/internal/fill"
	"github.com/stowage/stowage/storage"
	"github.com/stowage/stowage/upstream"
)

// maxRejoins bounds how often a client starts over with its own repository
// after a fill for another repository failed with a repository-specific
// error.
const maxRejoins = 3

// serveBlob answers GET and HEAD for a blob: from the cache when committed,
// else by joining (or starting) the one fill for its digest. HEAD never
// starts a download.
func (p *Proxy) serveBlob(w http.ResponseWriter, r *http.Request, q *request) {
	if p.serveCached(w, r, q) {
		return
	}
	p.m.misses.WithLabelValues("blob").Inc()
	if r.Method == http.MethodHead {
		p.headBlobMiss(w, r, q)
		return
	}
	for range maxRejoins {
		if !p.serveFill(w, r, q) {
			return
		}
	}
	p.writeError(w, r, fromUpstream(q.host, kindBlob, upstream.ErrNotFound))
}

// serveCached answers from the cache when it holds q's blob and reports
// whether it answered. The blob is marked in use (eviction leaves it
// alone) and touched before it is opened and linked: an eviction that
// decided on it before that removes it wholly before the link is written
// or not at all (storage.Store.LinkBlob), and a blob that went meanwhile
// is a miss.
func (p *Proxy) serveCached(w http.ResponseWriter, r *http.Request, q *request) bool {
	ctx := r.Context()
	release := p.serving.hold(q.dgst)
	defer release()
	rs, info, err := p.store.OpenBlob(ctx, q.dgst)
	if errors.Is(err, storage.ErrNotFound) {
		return false
	}
	if err != nil {
		p.writeError(w, r, err)
		return true
	}
	defer rs.Close()
	p.cacheHooks().Touched(q.dgst)
	if err := p.ensureBlobLinked(ctx, q); errors.Is(err, storage.ErrNotFound) {
		return false // removed since it was opened
	} else if err != nil {
		p.writeError(w, r, fromUpstream(q.host, kindBlob, err))
		return true
	}
	p.m.hits.WithLabelValues("blob").Inc()
	if r.Method == http.MethodGet && p.redirectBlob(w, r, q) {
		return true
	}
	setBlobHeaders(w.Header(), q)
	http.ServeContent(w, r, "", info.ModTime, rs)
	if r.Method == http.MethodGet {
		p.sampleIntegrity(q.dgst)
	}
	return true
}

// ensureBlobLinked allows a blob that the cache holds for another
// repository to be served under this one once the upstream confirms the
// repository has it (a digest is no password). When the upstream cannot be
// asked, the content-addressed copy is served but not linked: the next
// request asks again. So it is when the link cannot be written (a full
// disk): the cache's own failure never fails a client it can serve. A blob
// removed meanwhile is an error wrapping storage.ErrNotFound.
func (p *Proxy) ensureBlobLinked(ctx context.Context, q *request) error {
	linked, err := p.store.BlobLinked(ctx, q.cacheRepo, q.dgst)
	if err != nil || linked {
		return err
	}
	link, err := p.confirmRepo(ctx, q)
	if err != nil || !link {
		return err
	}
	err = p.store.LinkBlob(ctx, q.cacheRepo, q.dgst)
	if err != nil && !errors.Is(err, storage.ErrNotFound) && (isDiskFull(err) || isStorageFailure(err)) {
		p.noteStorageError(err)
		p.log.Warn("cannot link the blob; serving it unlinked", "repo", q.cacheRepo, "digest", q.dgst, "err", err)
		return nil
	}
	return err
}

// redirectBlob sends a client to a presigned URL of a committed blob when
// the store gives one (object storage with storage.redirect: true). Only
// committed blobs are redirected: a blob being filled is always streamed
// by the proxy. The URL carries a signature and is never logged.
func (p *Proxy) redirectBlob(w http.ResponseWriter, r *http.Request, q *request) bool {
	u, err := p.store.BlobURL(r, q.dgst)
	if err != nil {
		p.log.Warn("presigning a blob URL; streaming the blob instead", "digest", q.dgst, "err", err)
		return false
	}
	if u == "" {
		return false
	}
	setBlobHeaders(w.Header(), q)
	http.Redirect(w, r, u, http.StatusTemporaryRedirect)
	return true
}

func setBlobHeaders(h http.Header, q *request) {
	h.Set("Docker-Content-Digest", q.dgst.String())
	h.Set("Content-Type", "application/octet-stream")
	h.Set("ETag", `"`+q.dgst.String()+`"`)
	h.Set("Cache-Control", "max-age=31536000")
}

// headBlobMiss answers HEAD for an uncached blob with an upstream HEAD,
// without downloading anything. When the upstream is temporarily away, a
// running fill for the same repository that knows the size answers.
func (p *Proxy) headBlobMiss(w http.ResponseWriter, r *http.Request, q *request) {
	reg, err := p.upstream(q.host)
	if err != nil {
		p.writeError(w, r, fromUpstream(q.host, kindBlob, err))
		return
	}
	ctx, cancel := p.upstreamCtx(r.Context(), q.host)
	defer cancel()
	size, err := reg.HeadBlob(ctx, q.repo, q.dgst)
	if err != nil && upstream.Temporary(err) {
		if f, ok := p.fills.Get(q.dgst); ok && sameOrigin(f, q) {
			if n, _ := f.Progress(); n >= 0 {
				size, err = n, nil
			}
		}
	}
	if err != nil {
		p.writeError(w, r, fromUpstream(q.host, kindBlob, err))
		return
	}
	setBlobHeaders(w.Header(), q)
	w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
	w.Header().Set("Accept-Ranges", "bytes")
	w.WriteHeader(http.StatusOK)
}

// serveFill joins the fill for q's digest and streams from it. A fill
// started for another repository is joined only once the upstream confirms
// q's repository has the blob. It returns true when that fill failed with
// a repository-specific error: the caller then starts over, with q's own
// repository.
func (p *Proxy) serveFill(w http.ResponseWriter, r *http.Request, q *request) (rejoin bool) {
	h, leave, err := p.joinFill(r.Context(), q)
	if uncachedOK(r, err) {
		err = p.serveUncached(w, r, q, &bodyTap{ResponseWriter: w, h: q.dgst.Algorithm().Hash()}, -1)
	}
	if err != nil {
		p.writeError(w, r, fromUpstream(q.host, kindBlob, err))
		return false
	}
	if h == nil {
		return false
	}
	defer leave()
	link := true
	if !sameOrigin(h.Fill(), q) {
		if link, err = p.confirmRepo(r.Context(), q); err != nil {
			h.Release()
			if r.Context().Err() == nil {
				p.writeError(w, r, fromUpstream(q.host, kindBlob, err))
			}
			return false
		}
	}
	return p.streamFill(w, r, q, h, link)
}

// streamFill serves a client from a fill as its bytes arrive. Errors before
// the first byte become OCI errors; an error after it aborts the response
// so the client sees a cut-short body, never a complete wrong one. link
// says whether the repository may be linked to the blob afterwards.
func (p *Proxy) streamFill(w http.ResponseWriter, r *http.Request, q *request, h *fill.Hold, link bool) (rejoin bool) {
	ctx := r.Context()
	f := h.Fill()
	held := true
	defer func() {
		if held {
			h.Release() // no reader took the hold
		}
	}()
	// tap sees the body bytes the client gets: when the fill fails for
	// lack of space, the response goes on from the upstream (serveUncached).
	tap := &bodyTap{ResponseWriter: w, h: q.dgst.Algorithm().Hash()}
	fail := func(err error) bool {
		if ctx.Err() != nil {
			return false // the client left
		}
		if repoSpecific(err) && !sameOrigin(f, q) {
			return true
		}
		if uncachedOK(r, err) {
			if held {
				h.Release() // the fill's bytes are of no use to this client
				held = false
			}
			err = p.serveUncached(w, r, q, tap, -1)
			if err == nil {
				return false
			}
		}
		p.writeError(w, r, fromUpstream(q.host, kindBlob, err))
		return false
	}
	size, cached, err := f.WaitSize(ctx)
	if err != nil && ctx.Err() == nil {
		// The fill ended in error after verifying every byte (the commit
		// failed): the hold keeps those bytes readable.
		if _, _, verified, _ := f.Outcome(); verified {
			_, size = f.Progress()
			err = nil
		}
	}
	if err != nil {
		return fail(err)
	}
	if cached || size < 0 {
		// Committed by another process, or the upstream sent no length:
		// serve the verified blob from the store once the fill is done.
		if err := f.Wait(ctx); err != nil {
			return fail(err)
		}
		linkFn := func(ctx context.Context) error {
			if !link || !f.Linkable() {
				return nil
			}
			return p.store.LinkBlob(ctx, q.cacheRepo, q.dgst)
		}
		if cached && sameOrigin(f, q) {
			// Nothing was downloaded through q's repository, and the
			// upstream was not asked about it on the way in (serveFill asks
			// only when joining another repository's fill): authorise q as
			// a cache hit would (a digest is no password).
			linkFn = func(ctx context.Context) error { return p.ensureBlobLinked(ctx, q) }
		}
		p.serveStoreAfterFill(w, r, q, linkFn)
		return false
	}
	rd := h.Reader(ctx, size, !rangeReachesEnd(r.Header.Get("Range"), size))
	held = false // the reader owns the hold now
	defer func() { _ = rd.Close() }()
	setBlobHeaders(w.Header(), q)
	hw := &headersFirst{ResponseWriter: tap, empty: func() error { return verifiedOutcome(ctx, f) }}
	http.ServeContent(hw, r, "", time.Time{}, rd)
	if hw.err != nil && !uncachedOK(r, hw.err) {
		// A response without a byte was about to complete before the fill
		// verified the blob; its headers were held back.
		for _, k := range []string{"Content-Range", "ETag", "Cache-Control", "Accept-Ranges", "Last-Modified"} {
			w.Header().Del(k)
		}
		return fail(hw.err)
	}
	if uncachedOK(r, rd.Err()) || (hw.err != nil && uncachedOK(r, hw.err)) {
		_ = rd.Close() // leave the failed fill before the upstream download
		if err := p.serveUncached(w, r, q, tap, size); err != nil {
			p.writeError(w, r, fromUpstream(q.host, kindBlob, err))
		}
		return false
	}
	if rd.Err() != nil && ctx.Err() == nil {
		p.log.Warn("blob response cut short", "digest", q.dgst, "repo", q.cacheRepo, "err", rd.Err())
		// Make the truncation visible on every protocol.
		panic(http.ErrAbortHandler)
	}
	if rd.Err() == nil && link && f.Linkable() {
		if err := p.store.LinkBlob(context.WithoutCancel(ctx), q.cacheRepo, q.dgst); err != nil {
			p.log.Warn("link blob", "repo", q.cacheRepo, "digest", q.dgst, "err", err)
		}
	}
	return false
}

// verifiedOutcome waits for f to end and reports nil when every byte was
// verified (the commit may still have failed), else why not.
func verifiedOutcome(ctx context.Context, f *fill.Fill) error {
	err := f.Wait(ctx)
	if err == nil || ctx.Err() != nil {
		return err
	}
	if _, _, verified, _ := f.Outcome(); verified {
		return nil
	}
	return err
}

// rangeReachesEnd reports whether a Range header asks for nothing or for
// one range that includes the blob's last byte. Such a response completes
// only with the last byte, which a fill releases after verification; any
// other range must be answered from verified bytes only.
func rangeReachesEnd(h string, size int64) bool {
	if h == "" {
		return true
	}
	spec, ok := strings.CutPrefix(h, "bytes=")
	if !ok || strings.Contains(spec, ",") {
		return false
	}
	start, end, ok := strings.Cut(strings.TrimSpace(spec), "-")
	if !ok {
		return false
	}
	if start == "" || end == "" {
		return true // a suffix ("-N") or open-ended ("N-") range
	}
	e, err := strconv.ParseInt(end, 10, 64)
	return err == nil && e >= size-1
}

// headersFirst sends the status line and headers as soon as they are
// written: net/http otherwise holds them until 512 body bytes (or the end)
// arrive, which on a slow fill leaves clients with nothing for minutes. It
// hides io.ReaderFrom on purpose (a fill reader is no file for sendfile).
//
// A successful response that announces no body (an empty blob, a
// zero-length range) completes with its headers: no last byte is there for
// the fill reader to hold back until verification. Its headers wait for
// empty (the fill's verified outcome); when that fails they are not sent,
// and err tells the handler, which answers with the error instead.
type headersFirst struct {
	http.ResponseWriter
	empty func() error
	err   error
}

func (w *headersFirst) WriteHeader(code int) {
	if code >= 200 && code < 300 && w.Header().Get("Content-Length") == "0" {
		if w.err = w.empty(); w.err != nil {
			return
		}
	}
	w.ResponseWriter.WriteHeader(code)
	_ = http.NewResponseController(w.ResponseWriter).Flush()
}

func (w *headersFirst) Write(b []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap exposes the wrapped writer to http.ResponseController.
func (w *headersFirst) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// serveStoreAfterFill serves a blob a fill left in the store, once link
// (which writes the repository's link, or authorises and links it) allows.
func (p *Proxy) serveStoreAfterFill(w http.ResponseWriter, r *http.Request, q *request, link func(context.Context) error) {
	defer p.serving.hold(q.dgst)() // in use (eviction) before it is linked
	rs, info, err := p.store.OpenBlob(r.Context(), q.dgst)
	if err != nil {
		p.writeError(w, r, fromUpstream(q.host, kindBlob, err))
		return
	}
	defer rs.Close()
	if err := link(r.Context()); errors.Is(err, storage.ErrNotFound) {
		// Removed (evicted) since it was opened: the open blob is still
		// the verified one, served unlinked.
		p.log.Info("blob removed before it was linked; serving it unlinked", "repo", q.cacheRepo, "digest", q.dgst)
	} else if err != nil {
		p.writeError(w, r, fromUpstream(q.host, kindBlob, err))
		return
	}
	setBlobHeaders(w.Header(), q)
	http.ServeContent(w, r, "", info.ModTime, rs)
}

// fetchBlob makes sure a blob is in the cache, sharing the one fill with
// any client pulling it at the same time. It is the path prefetch uses.
// It reports whether the bytes came from the upstream. A fill for another
// repository is joined only once the upstream confirms q's.
func (p *Proxy) fetchBlob(ctx context.Context, q *request, progress func(int64)) (fromUpstream bool, err error) {
	for range maxRejoins {
		if _, err := p.store.StatBlob(ctx, q.dgst); err == nil {
			err := p.store.LinkBlob(ctx, q.cacheRepo, q.dgst)
			if errors.Is(err, storage.ErrNotFound) {
				continue // evicted since the look-up: fetch it
			}
			return false, err
		} else if !errors.Is(err, storage.ErrNotFound) {
			return false, err
		}
		h, leave, err := p.joinFill(ctx, q)
		if err != nil {
			return false, err
		}
		f := h.Fill()
		link := true
		if !sameOrigin(f, q) {
			if link, err = p.confirmRepo(ctx, q); err != nil {
				h.Release()
				leave()
				return false, err
			}
		}
		err = h.Follow(ctx, progress)
		leave()
		if err != nil && repoSpecific(err) && !sameOrigin(f, q) && ctx.Err() == nil {
			continue
		}
		if err != nil {
			return false, err
		}
		_, cached, _, _ := f.Outcome()
		if !link {
			return !cached, nil
		}
		return !cached, p.store.LinkBlob(ctx, q.cacheRepo, q.dgst)
	}
	return false, upstream.ErrNotFound
}
