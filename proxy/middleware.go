package proxy

import (
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"time"
)

// instrument wraps a route's handler with the access log line and the
// request metrics. Health probes and metric scrapes are counted, not logged.
//
// A response the handler cuts short with panic(http.ErrAbortHandler) (a blob
// whose fill failed after the headers went out) is recorded too, from a
// deferred function, with aborted=true in the log and in
// stowage_http_requests_aborted_total. The panic is not recovered: it goes on
// to net/http unchanged, with its stack.
func (p *Proxy) instrument(route string, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := p.now()
		sw := &statusWriter{ResponseWriter: w}
		completed := false
		defer func() { p.record(r, route, sw, start, !completed) }()
		h.ServeHTTP(sw, r)
		completed = true
	})
}

// record counts a finished request and writes its access log line. aborted
// means the handler did not return (it panicked, or the connection was cut
// on purpose): the status is the one already sent, else 500.
func (p *Proxy) record(r *http.Request, route string, sw *statusWriter, start time.Time, aborted bool) {
	status := sw.status
	if status == 0 {
		status = http.StatusOK
		if aborted {
			status = http.StatusInternalServerError
		}
	}
	p.m.requests.WithLabelValues(route, r.Method, strconv.Itoa(status)).Inc()
	p.m.servedBytes.WithLabelValues(route).Add(float64(sw.bytes))
	if aborted {
		p.m.aborted.WithLabelValues(route, r.Method).Inc()
	}
	if route == routeHealth || route == routeMetrics {
		return
	}
	level := slog.LevelInfo
	if status >= 500 || aborted {
		level = slog.LevelWarn
	}
	attrs := []slog.Attr{
		slog.String("method", r.Method),
		slog.String("path", r.URL.Path),
		slog.String("query", r.URL.RawQuery),
		slog.String("route", route),
		slog.Int("status", status),
		slog.Int64("bytes", sw.bytes),
		slog.Duration("duration", time.Since(start)),
		slog.String("remote", r.RemoteAddr),
		slog.String("user_agent", r.UserAgent()),
	}
	if aborted {
		attrs = append(attrs, slog.Bool("aborted", true))
	}
	p.log.LogAttrs(r.Context(), level, "request", attrs...)
}

// statusWriter records the status and body size. It keeps io.ReaderFrom so
// that http.ServeContent on a file still reaches the connection's sendfile
// path, and Unwrap for http.ResponseController.
type statusWriter struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(b)
	w.bytes += int64(n)
	return n, err
}

// ReadFrom hands the copy to the underlying writer's ReadFrom (sendfile for
// an *os.File source on a TCP connection).
func (w *statusWriter) ReadFrom(r io.Reader) (int64, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	var n int64
	var err error
	if rf, ok := w.ResponseWriter.(io.ReaderFrom); ok {
		n, err = rf.ReadFrom(r)
	} else {
		n, err = io.Copy(w.ResponseWriter, r)
	}
	w.bytes += n
	return n, err
}

// Flush forwards to the underlying writer when it can flush.
func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap exposes the wrapped writer to http.ResponseController.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
