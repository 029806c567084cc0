package proxy

import (
	"errors"
	"io"
	"net/http"
	"strings"
	"time"
)

// ServingOptions are the client-facing server's protections (see Serving).
type ServingOptions struct {
	// Auth, when set, requires Basic credentials on every path but the
	// probes (/healthz, /readyz), /metrics, and the admin API /api/ and
	// the dashboard /ui/, which have their own bearer token.
	Auth *Htpasswd
	// WriteIdleTimeout cuts a response whose client took no bytes for this
	// long; 0 disables it.
	WriteIdleTimeout time.Duration
}

// probePaths are answered before any other middleware and without
// authentication: kubelet probes and scrapes carry no credentials.
func isProbePath(path string) bool {
	return path == "/healthz" || path == "/readyz" || path == "/metrics"
}

// ownAuth: the admin API and the web dashboard check the admin bearer
// token themselves (a Basic challenge would replace it in browsers).
func ownAuth(path string) bool {
	return strings.HasPrefix(path, "/api/") || path == "/ui" || strings.HasPrefix(path, "/ui/")
}

// Serving wraps h, the registry and admin API, with the client-facing
// protections: the probes go straight to h (no authentication), other
// requests pass the Basic authentication when configured, and every
// response gets an idle-write deadline.
func Serving(h http.Handler, o ServingOptions) http.Handler {
	protected := h
	if o.Auth != nil {
		authed := o.Auth.Wrap(h)
		protected = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if ownAuth(r.URL.Path) {
				h.ServeHTTP(w, r)
				return
			}
			authed.ServeHTTP(w, r)
		})
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if o.WriteIdleTimeout > 0 {
			iw := newIdleWriter(w, o.WriteIdleTimeout)
			defer iw.finish()
			w = iw
		}
		if isProbePath(r.URL.Path) {
			h.ServeHTTP(w, r)
			return
		}
		protected.ServeHTTP(w, r)
	})
}

// idleChunk is how much of a ReadFrom (sendfile) copy may go under one
// deadline: a client must take idleChunk bytes per idle timeout (17 KiB/s
// for 1 MiB per minute) to keep its response.
const idleChunk = 1 << 20

// idleWriter extends the connection's write deadline before each write, so
// a response is cut only when its client stops taking bytes for the idle
// timeout, however long the whole transfer runs. It keeps io.ReaderFrom
// (sendfile, in idleChunk steps) and Unwrap for http.ResponseController.
type idleWriter struct {
	http.ResponseWriter
	rc      *http.ResponseController
	timeout time.Duration
	off     bool // deadlines are not supported by the connection
}

func newIdleWriter(w http.ResponseWriter, timeout time.Duration) *idleWriter {
	iw := &idleWriter{ResponseWriter: w, rc: http.NewResponseController(w), timeout: timeout}
	// A deadline left by the previous response on a kept-alive connection
	// must not cut this one while it is still being prepared.
	iw.setDeadline(time.Time{})
	return iw
}

func (w *idleWriter) setDeadline(t time.Time) {
	if w.off {
		return
	}
	if err := w.rc.SetWriteDeadline(t); errors.Is(err, http.ErrNotSupported) {
		w.off = true
	}
}

func (w *idleWriter) extend() { w.setDeadline(time.Now().Add(w.timeout)) }

// finish bounds the flush net/http does after the handler returns.
func (w *idleWriter) finish() { w.extend() }

func (w *idleWriter) WriteHeader(code int) {
	w.extend()
	w.ResponseWriter.WriteHeader(code)
}

func (w *idleWriter) Write(b []byte) (int, error) {
	w.extend()
	return w.ResponseWriter.Write(b)
}

// ReadFrom copies in idleChunk steps, each under a fresh deadline. A
// source that is an *io.LimitedReader (http.ServeContent's) is unwrapped
// first, so that each step is one LimitedReader over the file: the form
// the connection's sendfile path recognises.
func (w *idleWriter) ReadFrom(src io.Reader) (int64, error) {
	rf, ok := w.ResponseWriter.(io.ReaderFrom)
	if !ok {
		return io.Copy(writerOnly{w}, src)
	}
	var total int64
	remain := int64(-1)
	if lr, ok := src.(*io.LimitedReader); ok {
		src, remain = lr.R, lr.N
		defer func(n *int64) { lr.N -= *n }(&total)
	}
	for remain != 0 {
		step := int64(idleChunk)
		if remain > 0 {
			step = min(step, remain)
		}
		w.extend()
		n, err := rf.ReadFrom(&io.LimitedReader{R: src, N: step})
		total += n
		if remain > 0 {
			remain -= n
		}
		if err != nil {
			return total, err
		}
		if n < step {
			return total, nil // the source ended
		}
	}
	return total, nil
}

// writerOnly hides ReadFrom from io.Copy (no recursion).
type writerOnly struct{ io.Writer }

func (w *idleWriter) Flush() {
	w.extend()
	_ = w.rc.Flush()
}

// Unwrap exposes the wrapped writer to http.ResponseController.
func (w *idleWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
