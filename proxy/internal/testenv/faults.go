package testenv

import (
	"net/http"
	"strings"
	"time"
)

func isBlobGet(r *http.Request) bool {
	return r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/sha256:")
}

// SlowBlobs paces blob bodies: after every chunk bytes it flushes and
// sleeps pause, so a test can act while a download runs.
func SlowBlobs(chunk int, pause time.Duration) Fault {
	return func(w http.ResponseWriter, r *http.Request, next http.Handler) {
		if !isBlobGet(r) {
			next.ServeHTTP(w, r)
			return
		}
		next.ServeHTTP(&pacedWriter{ResponseWriter: w, chunk: chunk, pause: pause}, r)
	}
}

// CorruptBlobs flips one byte in every blob body of at least minSize bytes:
// the length stays right, the digest does not.
func CorruptBlobs(minSize int64) Fault {
	return func(w http.ResponseWriter, r *http.Request, next http.Handler) {
		if !isBlobGet(r) {
			next.ServeHTTP(w, r)
			return
		}
		next.ServeHTTP(&corruptWriter{ResponseWriter: w, at: minSize / 2}, r)
	}
}

// CutBlobs ends every blob body of a GET without a Range header after n
// bytes by closing the connection (a proxy dropping the stream).
func CutBlobs(n int64) Fault {
	return func(w http.ResponseWriter, r *http.Request, next http.Handler) {
		if !isBlobGet(r) || r.Header.Get("Range") != "" {
			next.ServeHTTP(w, r)
			return
		}
		next.ServeHTTP(&cutWriter{ResponseWriter: w, left: n}, r)
	}
}

type pacedWriter struct {
	http.ResponseWriter
	chunk   int
	pause   time.Duration
	pending int
}

func (w *pacedWriter) Write(b []byte) (int, error) {
	written := 0
	for len(b) > 0 {
		n := min(len(b), w.chunk-w.pending)
		m, err := w.ResponseWriter.Write(b[:n])
		written += m
		if err != nil {
			return written, err
		}
		w.pending += m
		b = b[m:]
		if w.pending >= w.chunk {
			w.pending = 0
			if f, ok := w.ResponseWriter.(http.Flusher); ok {
				f.Flush()
			}
			time.Sleep(w.pause)
		}
	}
	return written, nil
}

type corruptWriter struct {
	http.ResponseWriter
	off int64
	at  int64
}

func (w *corruptWriter) Write(b []byte) (int, error) {
	if w.at >= w.off && w.at < w.off+int64(len(b)) {
		c := append([]byte(nil), b...)
		c[w.at-w.off] ^= 0xff
		b = c
	}
	n, err := w.ResponseWriter.Write(b)
	w.off += int64(n)
	return n, err
}

type cutWriter struct {
	http.ResponseWriter
	left int64
}

func (w *cutWriter) Write(b []byte) (int, error) {
	if int64(len(b)) > w.left {
		b = b[:w.left]
	}
	n, err := w.ResponseWriter.Write(b)
	w.left -= int64(n)
	if w.left <= 0 {
		if f, ok := w.ResponseWriter.(http.Flusher); ok {
			f.Flush()
		}
		panic(http.ErrAbortHandler) // aborts the connection mid-body
	}
	return n, err
}
