package testenv

import (
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
)

// Faults for the blob fill tests.

// IgnoreRange makes blob GETs behave like a server without Range support
// (the body starts at byte 0 with a 200), then applies f (nil: none).
func IgnoreRange(f Fault) Fault {
	return func(w http.ResponseWriter, r *http.Request, next http.Handler) {
		if isBlobGet(r) {
			r.Header.Del("Range")
		}
		if f == nil {
			next.ServeHTTP(w, r)
			return
		}
		f(w, r, next)
	}
}

// FirstBlobGet applies first to the first blob GET and rest (nil: none) to
// every later request.
func FirstBlobGet(first, rest Fault) Fault {
	var seen atomic.Bool
	return func(w http.ResponseWriter, r *http.Request, next http.Handler) {
		if isBlobGet(r) && seen.CompareAndSwap(false, true) {
			first(w, r, next)
			return
		}
		if rest == nil {
			next.ServeHTTP(w, r)
			return
		}
		rest(w, r, next)
	}
}

// CorruptThenCut flips the body byte at offset at and then cuts the body
// after cut bytes: a wrong prefix of the right length, then a broken
// connection.
func CorruptThenCut(at, cut int64) Fault {
	return func(w http.ResponseWriter, r *http.Request, next http.Handler) {
		next.ServeHTTP(&corruptWriter{ResponseWriter: &cutWriter{ResponseWriter: w, left: cut}, at: at}, r)
	}
}

// CutAfter cuts every blob body (Range or not) after n bytes.
func CutAfter(n int64) Fault {
	return func(w http.ResponseWriter, r *http.Request, next http.Handler) {
		if !isBlobGet(r) {
			next.ServeHTTP(w, r)
			return
		}
		next.ServeHTTP(&cutWriter{ResponseWriter: w, left: n}, r)
	}
}

// StallBlobs answers blob GETs with the real status and headers and the
// first n body bytes, then sends nothing until release is closed or the
// request ends.
func StallBlobs(n int64, release <-chan struct{}) Fault {
	return func(w http.ResponseWriter, r *http.Request, next http.Handler) {
		if !isBlobGet(r) {
			next.ServeHTTP(w, r)
			return
		}
		next.ServeHTTP(&stallWriter{ResponseWriter: w, left: n, release: release, done: r.Context().Done()}, r)
	}
}

type stallWriter struct {
	http.ResponseWriter
	left    int64
	release <-chan struct{}
	done    <-chan struct{}
}

func (w *stallWriter) Write(b []byte) (int, error) {
	if w.left <= 0 {
		w.stall()
		return w.ResponseWriter.Write(b)
	}
	n := min(int64(len(b)), w.left)
	m, err := w.ResponseWriter.Write(b[:n])
	w.left -= int64(m)
	if err != nil || int64(m) == int64(len(b)) {
		return m, err
	}
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
	w.stall()
	m2, err := w.ResponseWriter.Write(b[n:])
	return m + m2, err
}

func (w *stallWriter) stall() {
	select {
	case <-w.release:
	case <-w.done:
	}
}

// HoldRepoBlobs makes blob GETs of one repository wait for release (or
// the request's end) before the real registry answers them.
func HoldRepoBlobs(repo string, release <-chan struct{}) Fault {
	return func(w http.ResponseWriter, r *http.Request, next http.Handler) {
		if isBlobGet(r) && strings.HasPrefix(r.URL.Path, "/v2/"+repo+"/blobs/") {
			select {
			case <-release:
			case <-r.Context().Done():
				return
			}
		}
		next.ServeHTTP(w, r)
	}
}

// FailBlobs answers blob GETs (and HEADs with heads) with status and, when
// retryAfter > 0, a Retry-After header in seconds.
func FailBlobs(status, retryAfter int, heads bool) Fault {
	return func(w http.ResponseWriter, r *http.Request, next http.Handler) {
		blob := strings.Contains(r.URL.Path, "/blobs/sha256:")
		if !blob || (r.Method == http.MethodHead && !heads) || (r.Method != http.MethodGet && r.Method != http.MethodHead) {
			next.ServeHTTP(w, r)
			return
		}
		if retryAfter > 0 {
			w.Header().Set("Retry-After", strconv.Itoa(retryAfter))
		}
		w.WriteHeader(status)
	}
}

// Chain applies faults in order: each one's next is the following fault.
func Chain(faults ...Fault) Fault {
	return func(w http.ResponseWriter, r *http.Request, next http.Handler) {
		h := next
		for i := len(faults) - 1; i >= 0; i-- {
			f, inner := faults[i], h
			h = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { f(w, r, inner) })
		}
		h.ServeHTTP(w, r)
	}
}
