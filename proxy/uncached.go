package proxy

import (
	"context"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"strconv"
	"strings"

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
	rh := r.Header.Get("Range")
	return err != nil && isDiskFull(err) && r.Method == http.MethodGet && r.Context().Err() == nil &&
		(rh == "" || (!strings.Contains(rh, ",") && r.Header.Get("If-Range") == ""))
}

// singleRange parses a one-range Range header ("bytes=a-b", "bytes=a-",
// "bytes=-n") against a blob of size bytes, as http.ServeContent does.
func singleRange(h string, size int64) (start, end int64, ok bool) {
	spec, ok := strings.CutPrefix(h, "bytes=")
	if !ok || strings.Contains(spec, ",") {
		return 0, 0, false
	}
	a, b, ok := strings.Cut(strings.TrimSpace(spec), "-")
	if !ok {
		return 0, 0, false
	}
	a, b = strings.TrimSpace(a), strings.TrimSpace(b)
	if a == "" {
		n, err := strconv.ParseInt(b, 10, 64)
		if err != nil || n <= 0 {
			return 0, 0, false
		}
		return max(0, size-n), size - 1, size > 0
	}
	start, err := strconv.ParseInt(a, 10, 64)
	if err != nil || start < 0 || start >= size {
		return 0, 0, false
	}
	end = size - 1
	if b != "" {
		e, err := strconv.ParseInt(b, 10, 64)
		if err != nil || e < start {
			return 0, 0, false
		}
		end = min(e, size-1)
	}
	return start, end, true
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
	if rh := r.Header.Get("Range"); rh != "" {
		return p.streamUncachedRange(ctx, rh, q, t, size)
	}
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

// streamUncachedRange answers a one-range request from the upstream: the
// whole blob is downloaded and hashed, the range's bytes after the t.n the
// client already has are sent as they pass, except the range's last byte,
// sent once the whole blob matches its digest.
func (p *Proxy) streamUncachedRange(ctx context.Context, rh string, q *request, t *bodyTap, size int64) error {
	reg, err := p.upstream(q.host)
	if err != nil {
		return err
	}
	b, err := reg.GetBlob(ctx, q.repo, q.dgst, 0)
	if err != nil {
		return err
	}
	defer b.Body.Close()
	if b.Offset != 0 {
		return fmt.Errorf("%w: upstream answered from %d, want 0", upstream.ErrInvalid, b.Offset)
	}
	if b.Size >= 0 {
		if size >= 0 && b.Size != size {
			return fmt.Errorf("%w: upstream size %d, fill size %d", upstream.ErrDigestMismatch, b.Size, size)
		}
		size = b.Size
	}
	if size < 0 {
		return fmt.Errorf("%w: upstream sent no length for a range request", upstream.ErrInvalid)
	}
	start, end, ok := singleRange(rh, size)
	if !ok {
		return fmt.Errorf("%w: range %q of %d bytes", upstream.ErrRangeNotSatisfiable, rh, size)
	}
	if !t.headerSent {
		setBlobHeaders(t.Header(), q)
		t.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", start, end, size))
		t.Header().Set("Content-Length", strconv.FormatInt(end-start+1, 10))
		t.WriteHeader(http.StatusPartialContent)
		_ = http.NewResponseController(t).Flush()
	}
	p.log.Info("serving a blob range from the upstream without caching it", "digest", q.dgst, "repo", q.cacheRepo, "range", rh)
	counter := p.m.upstreamBytes.WithLabelValues(q.host)
	h := q.dgst.Algorithm().Hash()
	from := start + t.n // the client has the range's first t.n bytes
	var (
		pos  int64
		last []byte
	)
	buf := make([]byte, chunkSize)
	for {
		n, rerr := b.Body.Read(buf)
		if n > 0 {
			counter.Add(float64(n))
			if pos+int64(n) > size {
				return fmt.Errorf("%w: upstream sent more than %d bytes", upstream.ErrDigestMismatch, size)
			}
			h.Write(buf[:n])
			// Send [from, end) of this chunk; keep the byte at end.
			lo, hi := max(from, pos), min(end, pos+int64(n))
			if lo < hi {
				if _, err := t.ResponseWriter.Write(buf[lo-pos : hi-pos]); err != nil {
					return err
				}
				from = hi
			}
			if end >= pos && end < pos+int64(n) {
				last = []byte{buf[end-pos]}
			}
			pos += int64(n)
		}
		if errors.Is(rerr, io.EOF) {
			break
		}
		if rerr != nil {
			return fmt.Errorf("%w: %w", upstream.ErrUnavailable, rerr)
		}
	}
	if pos != size {
		return fmt.Errorf("%w: body ended at %d of %d bytes", upstream.ErrUnavailable, pos, size)
	}
	if got := fmt.Sprintf("%s:%x", q.dgst.Algorithm(), h.Sum(nil)); got != q.dgst.String() {
		return fmt.Errorf("%w: upstream bytes hash to %s, want %s", upstream.ErrDigestMismatch, got, q.dgst)
	}
	_, err = t.ResponseWriter.Write(last)
	return err
}
