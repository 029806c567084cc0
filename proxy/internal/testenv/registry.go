// Package testenv runs a real distribution registry in-process as the
// upstream of proxy tests, counts the requests it receives by kind, lets a
// test inject faults a real registry cannot produce on demand, and seeds it
// with images through go-containerregistry.
package testenv

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/distribution/distribution/v3/configuration"
	"github.com/distribution/distribution/v3/registry/handlers"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/filesystem" // registers the driver
	"github.com/sirupsen/logrus"
)

// Kind classifies an upstream request for counting.
type Kind string

// Request kinds counted by Registry.
const (
	ManifestGet  Kind = "manifest GET"
	ManifestHead Kind = "manifest HEAD"
	BlobGet      Kind = "blob GET"
	BlobHead     Kind = "blob HEAD"
	Tags         Kind = "tags"
	Referrers    Kind = "referrers"
	Other        Kind = "other"
)

// Registry is a real distribution registry on a loopback listener.
type Registry struct {
	// URL is the base URL ("http://127.0.0.1:port").
	URL string
	// Host is host:port, for image references.
	Host string

	server  *httptest.Server
	mu      sync.Mutex
	counts  map[Kind]int
	fault   atomic.Pointer[Fault]
	blobOut atomic.Int64
}

// Fault intercepts upstream requests: it may answer itself, or call next
// (the real registry) with a wrapped writer.
type Fault func(w http.ResponseWriter, r *http.Request, next http.Handler)

// Options configure a test registry.
type Options struct {
	// RootDir is the registry's filesystem root (e.g. a stock registry over
	// a Stowage cache); empty means a fresh temporary directory. (The
	// inmemory driver is quadratic on large pushes.)
	RootDir string
}

// Start runs a registry for the duration of the test.
func Start(t testing.TB, opts Options) *Registry {
	t.Helper()
	cfg := &configuration.Configuration{}
	cfg.Log.Level = "error"
	cfg.Log.AccessLog.Disabled = true
	root := opts.RootDir
	if root == "" {
		root = t.TempDir()
	}
	cfg.Storage = configuration.Storage{"filesystem": configuration.Parameters{"rootdirectory": root}}
	cfg.Storage["maintenance"] = configuration.Parameters{"uploadpurging": map[any]any{"enabled": false}}
	cfg.Storage["delete"] = configuration.Parameters{"enabled": true}
	logrus.SetOutput(io.Discard)
	ctx, cancel := context.WithCancel(context.Background())
	app := handlers.NewApp(ctx, cfg)
	r := &Registry{counts: map[Kind]int{}}
	r.server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.count(req)
		cw := &countingWriter{ResponseWriter: w}
		defer func() {
			if classify(req) == BlobGet {
				r.blobOut.Add(cw.n)
			}
		}()
		if f := r.fault.Load(); f != nil {
			(*f)(cw, req, app)
		} else {
			app.ServeHTTP(cw, req)
		}
	}))
	r.URL = r.server.URL
	r.Host = strings.TrimPrefix(r.URL, "http://")
	t.Cleanup(func() {
		r.server.Close()
		cancel()
	})
	return r
}

// Close stops the registry now (the upstream goes away).
func (r *Registry) Close() { r.server.Close() }

// SetFault installs (or with nil removes) a fault injector.
func (r *Registry) SetFault(f Fault) {
	if f == nil {
		r.fault.Store(nil)
		return
	}
	r.fault.Store(&f)
}

// Count returns how many requests of a kind the registry received.
func (r *Registry) Count(k Kind) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.counts[k]
}

// BlobBytes returns how many blob body bytes the registry sent.
func (r *Registry) BlobBytes() int64 { return r.blobOut.Load() }

// ResetCounts zeroes the counters.
func (r *Registry) ResetCounts() {
	r.mu.Lock()
	defer r.mu.Unlock()
	clear(r.counts)
	r.blobOut.Store(0)
}

func (r *Registry) count(req *http.Request) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.counts[classify(req)]++
}

func classify(req *http.Request) Kind {
	p := req.URL.Path
	switch {
	case strings.Contains(p, "/manifests/"):
		if req.Method == http.MethodHead {
			return ManifestHead
		}
		return ManifestGet
	case strings.Contains(p, "/blobs/uploads"):
		return Other
	case strings.Contains(p, "/blobs/"):
		if req.Method == http.MethodHead {
			return BlobHead
		}
		return BlobGet
	case strings.HasSuffix(p, "/tags/list"):
		return Tags
	case strings.Contains(p, "/referrers/"):
		return Referrers
	}
	return Other
}

type countingWriter struct {
	http.ResponseWriter
	n int64
}

func (w *countingWriter) Write(b []byte) (int, error) {
	n, err := w.ResponseWriter.Write(b)
	w.n += int64(n)
	return n, err
}

func (w *countingWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}
