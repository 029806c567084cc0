package proxy

import (
	"context"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"strconv"

	"github.com/stowage/stowage/upstream"
)

// bodyTap counts and hashes the body bytes a response got, so that a
// response a fill could not finish (the cache's disk is full) can be
// continued from the upstream and still be verified as a whole.
type bodyTap struct {
	http.ResponseWriter
	h          hash.Hash
	n          int64
	headerSent bool
}

func (t *bodyTap) WriteHeader(code int) {
	t.headerSent = true
	t.ResponseWriter.WriteHeader(code)
}

func (t *bodyTap) Write(p []byte) (int, error) {
	t.headerSent = true
	n, err := t.ResponseWriter.Write(p)
	t.h.Write(p[:n])
	t.n += int64(n)
	return n, err
}

// Unwrap exposes the wrapped writer to http.ResponseController.
func (t *bodyTap) Unwrap() http.ResponseWriter { return t.ResponseWriter }

// uncachedOK reports whether a blob request whose fill failed with err can
// be answered straight from the upstream: the cache's disk is full, the
// request is a whole-blob GET (a range cannot be verified without the
// whole blob) and the client is still there.
func uncachedOK(r *http.Request, err error) bool {
	return err != nil && isDiskFull(err) && r.Method == http.MethodGet &&
		r.Header.Get("Range") == "" && r.Context().Err() == nil
}

// serveUncached answers a whole-blob GET from the upstream without caching
// it, continuing after the t.n bytes the client already got from the fill
// (0: from the start, headers included). Every byte is hashed as it goes,
// and the last one is sent only once the digest matches: a complete
// response never carries unverified bytes. It returns an error only when
// nothing was sent yet; after the headers a failure aborts the response.
func (p *Proxy) serveUncached(w http.ResponseWriter, r *http.Request, q *request, t *bodyTap, size int64) error {
	err := p.streamUncached(w, r, q, t, size)
	if err == nil {
		p.m.uncachedServes.WithLabelValues("complete").Inc()
		return nil
	}
	p.m.uncachedServes.WithLabelValues("failed").Inc()
	if !t.headerSent {
		return err
	}
	if r.Context().Err() == nil {
		p.log.Warn("uncached blob response cut short", "digest", q.dgst, "repo", q.cacheRepo, "sent", t.n, "err", err)
	}
	panic(http.ErrAbortHandler)
}

func (p *Proxy) streamUncached(_ http.ResponseWriter, r *http.Request, q *request, t *bodyTap, size int64) error {
	ctx, cancel := context.WithTimeout(r.Context(), p.cfg.Cache.Fill.MaxDuration)
	defer cancel()
	reg, err := p.upstream(q.host)
	if err != nil {
		return err
	}
	b, err := reg.GetBlob(ctx, q.repo, q.dgst, t.n)
	if err != nil {
		return err
	}
	defer b.Body.Close()
	if b.Size >= 0 {
		if size >= 0 && b.Size != size {
			return fmt.Errorf("%w: upstream size %d, fill size %d", upstream.ErrDigestMismatch, b.Size, size)
		}
		size = b.Size
	}
	counter := p.m.upstreamBytes.WithLabelValues(q.host)
	body := io.Reader(b.Body)
	if b.Offset != t.n {
		if b.Offset != 0 {
			return fmt.Errorf("%w: upstream resumed at %d, want %d", upstream.ErrInvalid, b.Offset, t.n)
		}
		// The server ignored Range: skip what the client has. A prefix
		// that differs from what it got fails the digest check below.
		skipped, err := io.CopyN(io.Discard, body, t.n)
		counter.Add(float64(skipped))
		if err != nil {
			return fmt.Errorf("%w: %w", upstream.ErrUnavailable, err)
		}
	}
	if !t.headerSent {
		setBlobHeaders(t.Header(), q)
		if size >= 0 {
			t.Header().Set("Content-Length", strconv.FormatInt(size, 10))
		}
		t.WriteHeader(http.StatusOK)
		_ = http.NewResponseController(t).Flush()
	}
	p.log.Info("serving blob from the upstream without caching it", "digest", q.dgst, "repo", q.cacheRepo, "offset", t.n)
	buf := make([]byte, chunkSize)
	var last []byte // the held-back last byte
	for {
		n, rerr := body.Read(buf)
		if n > 0 {
			counter.Add(float64(n))
			if size >= 0 && t.n+int64(len(last))+int64(n) > size {
				return fmt.Errorf("%w: upstream sent more than %d bytes", upstream.ErrDigestMismatch, size)
			}
			if len(last) > 0 {
				if _, err := t.Write(last); err != nil {
					return err
				}
			}
			if _, err := t.Write(buf[:n-1]); err != nil {
				return err
			}
			last = append(last[:0], buf[n-1])
		}
		if errors.Is(rerr, io.EOF) {
			break
		}
		if rerr != nil {
			return fmt.Errorf("%w: %w", upstream.ErrUnavailable, rerr)
		}
	}
	total := t.n + int64(len(last))
	if size >= 0 && total != size {
		return fmt.Errorf("%w: body ended at %d of %d bytes", upstream.ErrUnavailable, total, size)
	}
	t.h.Write(last)
	if got := fmt.Sprintf("%s:%x", q.dgst.Algorithm(), t.h.Sum(nil)); got != q.dgst.String() {
		return fmt.Errorf("%w: upstream bytes hash to %s, want %s", upstream.ErrDigestMismatch, got, q.dgst)
	}
	if len(last) > 0 {
		if _, err := t.ResponseWriter.Write(last); err != nil {
			return err
		}
		t.n++
	}
	return nil
}
