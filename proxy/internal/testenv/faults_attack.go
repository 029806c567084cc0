package testenv

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
)

// Faults of a hostile upstream, for the adversarial fill tests: lies about
// lengths and ranges, bodies that differ on every request.

// EmptyBlobs answers every blob GET with 200, Content-Length: 0 and no
// body, whatever the digest: a length lie no real registry tells.
func EmptyBlobs() Fault {
	return func(w http.ResponseWriter, r *http.Request, next http.Handler) {
		if !isBlobGet(r) {
			next.ServeHTTP(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", "0")
		w.WriteHeader(http.StatusOK)
	}
}

// LieLength announces Content-Length plus delta on blob GETs and sends the
// real body: with delta > 0 the body ends early (the connection breaks),
// with delta < 0 it is cut to the announced length.
func LieLength(delta int64) Fault {
	return func(w http.ResponseWriter, r *http.Request, next http.Handler) {
		if !isBlobGet(r) {
			next.ServeHTTP(w, r)
			return
		}
		next.ServeHTTP(&headerRewriter{ResponseWriter: w, rewrite: func(h http.Header, code int) int {
			if n, err := strconv.ParseInt(h.Get("Content-Length"), 10, 64); err == nil {
				h.Set("Content-Length", strconv.FormatInt(n+delta, 10))
			}
			return code
		}}, r)
	}
}

// NoLength sends blob bodies without Content-Length (chunked), then
// applies f (nil: none) to the request.
func NoLength(f Fault) Fault {
	return func(w http.ResponseWriter, r *http.Request, next http.Handler) {
		if isBlobGet(r) {
			w = &headerRewriter{ResponseWriter: w, rewrite: func(h http.Header, code int) int {
				h.Del("Content-Length")
				return code
			}}
		}
		if f == nil {
			next.ServeHTTP(w, r)
			return
		}
		f(w, r, next)
	}
}

// MutateBlobs flips a different body byte on every blob GET (the byte at
// offset step*k on the k-th GET, k from 1): an upstream whose bytes differ
// on each request.
func MutateBlobs(step int64) Fault {
	var calls atomic.Int64
	return func(w http.ResponseWriter, r *http.Request, next http.Handler) {
		if !isBlobGet(r) {
			next.ServeHTTP(w, r)
			return
		}
		k := calls.Add(1)
		next.ServeHTTP(&corruptWriter{ResponseWriter: w, at: step * k}, r)
	}
}

// RangeFromZero answers a ranged blob GET ("bytes=N-") with 206 and a
// Content-Range that starts at N, but with the body from byte 0: a 206
// whose Content-Range start lies. GETs without Range pass.
func RangeFromZero() Fault {
	return func(w http.ResponseWriter, r *http.Request, next http.Handler) {
		rng := r.Header.Get("Range")
		if !isBlobGet(r) || rng == "" {
			next.ServeHTTP(w, r)
			return
		}
		start, err := strconv.ParseInt(rng[len("bytes="):len(rng)-1], 10, 64)
		if err != nil {
			http.Error(w, "bad range", http.StatusBadRequest)
			return
		}
		r.Header.Del("Range")
		var total int64
		cw := &cutSilently{}
		cw.ResponseWriter = &headerRewriter{ResponseWriter: w, rewrite: func(h http.Header, code int) int {
			total, _ = strconv.ParseInt(h.Get("Content-Length"), 10, 64)
			h.Set("Content-Range", "bytes "+strconv.FormatInt(start, 10)+"-"+strconv.FormatInt(total-1, 10)+"/"+strconv.FormatInt(total, 10))
			h.Set("Content-Length", strconv.FormatInt(total-start, 10))
			cw.left = total - start
			return http.StatusPartialContent
		}}
		next.ServeHTTP(cw, r)
	}
}

// ResizeRanges answers ranged blob GETs with the real bytes but a
// Content-Range whose total is the real size plus delta: the blob's size
// changes between the first request and the resume.
func ResizeRanges(delta int64) Fault {
	return func(w http.ResponseWriter, r *http.Request, next http.Handler) {
		if !isBlobGet(r) || r.Header.Get("Range") == "" {
			next.ServeHTTP(w, r)
			return
		}
		next.ServeHTTP(&headerRewriter{ResponseWriter: w, rewrite: func(h http.Header, code int) int {
			var s, e, total int64
			if _, err := fmt.Sscanf(h.Get("Content-Range"), "bytes %d-%d/%d", &s, &e, &total); err == nil {
				h.Set("Content-Range", "bytes "+strconv.FormatInt(s, 10)+"-"+strconv.FormatInt(e, 10)+"/"+strconv.FormatInt(total+delta, 10))
			}
			return code
		}}, r)
	}
}

// headerRewriter lets a fault change the status and headers the real
// registry sends, just before they go out.
type headerRewriter struct {
	http.ResponseWriter
	rewrite func(h http.Header, code int) int
	wrote   bool
}

func (w *headerRewriter) WriteHeader(code int) {
	if w.wrote {
		return
	}
	w.wrote = true
	w.ResponseWriter.WriteHeader(w.rewrite(w.Header(), code))
}

func (w *headerRewriter) Write(b []byte) (int, error) {
	if !w.wrote {
		w.WriteHeader(http.StatusOK)
	}
	return w.ResponseWriter.Write(b)
}

func (w *headerRewriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// cutSilently drops everything after left bytes (the handler does not
// notice).
type cutSilently struct {
	http.ResponseWriter
	left int64
}

func (w *cutSilently) Write(b []byte) (int, error) {
	w.WriteHeader(http.StatusOK) // the rewriter sets left, once
	n := len(b)
	if int64(len(b)) > w.left {
		b = b[:max(w.left, 0)]
	}
	m, err := w.ResponseWriter.Write(b)
	w.left -= int64(m)
	if err != nil {
		return m, err
	}
	return n, nil
}

// ManifestSwap answers manifest requests for reference from with the
// registry's answer for reference to (a valid manifest, but another one).
// With strip the answer carries no Docker-Content-Digest.
func ManifestSwap(from, to string, strip bool) Fault {
	return func(w http.ResponseWriter, r *http.Request, next http.Handler) {
		if !isManifest(r) || !strings.HasSuffix(r.URL.Path, "/manifests/"+from) {
			next.ServeHTTP(w, r)
			return
		}
		r.URL.Path = strings.TrimSuffix(r.URL.Path, from) + to
		r.URL.RawPath = ""
		if strip {
			w = &headerRewriter{ResponseWriter: w, rewrite: func(h http.Header, code int) int {
				h.Del("Docker-Content-Digest")
				return code
			}}
		}
		next.ServeHTTP(w, r)
	}
}

// ManifestHeadDigest answers manifest HEADs with the registry's answer but
// Docker-Content-Digest set to d (a HEAD the GET then contradicts).
func ManifestHeadDigest(d string) Fault {
	return func(w http.ResponseWriter, r *http.Request, next http.Handler) {
		if !isManifest(r) || r.Method != http.MethodHead {
			next.ServeHTTP(w, r)
			return
		}
		next.ServeHTTP(&headerRewriter{ResponseWriter: w, rewrite: func(h http.Header, code int) int {
			h.Set("Docker-Content-Digest", d)
			return code
		}}, r)
	}
}

// ManifestGetDigest answers manifest GETs with the registry's body but
// Docker-Content-Digest set to d.
func ManifestGetDigest(d string) Fault {
	return func(w http.ResponseWriter, r *http.Request, next http.Handler) {
		if !isManifest(r) || r.Method != http.MethodGet {
			next.ServeHTTP(w, r)
			return
		}
		next.ServeHTTP(&headerRewriter{ResponseWriter: w, rewrite: func(h http.Header, code int) int {
			h.Set("Docker-Content-Digest", d)
			return code
		}}, r)
	}
}

// ManifestBody answers every manifest GET and HEAD itself: 200 with
// Content-Type ct, Docker-Content-Digest of body, and body. length is the
// Content-Length announced: -1 sends none (chunked), any other value is
// announced as is (a lie when it is not len(body)).
func ManifestBody(ct string, body []byte, length int64) Fault {
	return func(w http.ResponseWriter, r *http.Request, next http.Handler) {
		if !isManifest(r) {
			next.ServeHTTP(w, r)
			return
		}
		h := w.Header()
		h.Set("Content-Type", ct)
		h.Set("Docker-Content-Digest", digestOf(body))
		if length >= 0 {
			h.Set("Content-Length", strconv.FormatInt(length, 10))
		}
		w.WriteHeader(http.StatusOK)
		if r.Method == http.MethodGet {
			_, _ = w.Write(body)
		}
	}
}

func digestOf(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// EndlessBlobs answers blob GETs with 200, no Content-Length, and
// pseudo-random bytes until limit bytes were sent or the request ends: a
// body that never stops (limit keeps the test bounded). HEADs pass.
func EndlessBlobs(limit int64) Fault {
	return func(w http.ResponseWriter, r *http.Request, next http.Handler) {
		if !isBlobGet(r) {
			next.ServeHTTP(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		w.WriteHeader(http.StatusOK)
		chunk := RandomBytes(64<<10, 7)
		for sent := int64(0); sent < limit; sent += int64(len(chunk)) {
			if _, err := w.Write(chunk); err != nil || r.Context().Err() != nil {
				return
			}
		}
	}
}
