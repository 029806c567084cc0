package dashboard

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/stowage/stowage/proxy"
	"github.com/stowage/stowage/proxy/prefetch"
	"github.com/stowage/stowage/storage"
	"github.com/stowage/stowage/storage/evict"
	"github.com/stowage/stowage/storage/usage"
)

// Proxy is the in-memory state of the proxy the dashboard shows;
// *proxy.Proxy implements it.
type Proxy interface {
	Fills() []proxy.FillInfo
	UpstreamStates() []proxy.UpstreamState
}

// Store is the part of the cache the dashboard reads; *storage.Store
// implements it.
type Store interface {
	Repositories(ctx context.Context) ([]string, error)
	Tags(ctx context.Context, repo string) ([]string, error)
	GetTag(ctx context.Context, repo, tag string) (storage.Tag, error)
	ReadManifest(ctx context.Context, repo string, d digest.Digest, max int64) ([]byte, error)
	StatBlob(ctx context.Context, d digest.Digest) (storage.BlobInfo, error)
	OpenBlob(ctx context.Context, d digest.Digest) (io.ReadSeekCloser, storage.BlobInfo, error)
	Pins(ctx context.Context) ([]storage.Pin, error)
	Root() string
}

// UsageSource reports the cache's size against its cap, as tracked by a
// usage index: bytes used, the cap (0: none), the filesystem's total and
// free bytes, and the number of objects (blobs and manifests).
type UsageSource interface {
	Usage() (used, capacity, fsTotal, fsFree int64, objects int)
}

// EvictionSource may also be implemented by a UsageSource: the last
// evictions, newest first.
type EvictionSource interface {
	RecentEvictions() []Eviction
}

// PullSource reports a cache repository's pulls (manifest GETs answered
// 200); *usage.Pulls implements it.
type PullSource interface {
	Count(repo string) usage.PullCount
}

// Eviction is one blob removed to keep the cache within its limits (the
// eviction engine's record).
type Eviction = evict.Eviction

// Options configure the dashboard.
type Options struct {
	// Proxy, Store and Gatherer are required. Gatherer is the proxy's
	// Prometheus registry: the traffic numbers are read from its counters.
	Proxy    Proxy
	Store    Store
	Gatherer prometheus.Gatherer
	// Jobs, if set, are the prefetch jobs shown (GET /api/v1/prefetch).
	Jobs *prefetch.Jobs
	// Admin, if set, serves every other /api/ request (the admin API:
	// POST /api/v1/prefetch, DELETE /api/v1/fills/{digest}); it checks
	// the token itself.
	Admin http.Handler
	// Token is the admin token the read API accepts ("" accepts none).
	Token string
	// PublicReadOnly serves the read API without a token; a wrong token
	// is still refused.
	PublicReadOnly bool
	// Usage, if set, reports the cache's usage and cap; without it the
	// overview shows the filesystem of Store.Root() only.
	Usage UsageSource
	// SampleInterval is the traffic sampling period (default 10s).
	SampleInterval time.Duration
	// PullHost is the host shown in pull commands (default: the
	// request's Host).
	PullHost string
	// Replica names this process in the fills list (default: hostname).
	Replica string
	// Version is shown in the page footer.
	Version string
	// Logger (default: discard).
	Logger *slog.Logger
	// Now replaces time.Now.
	Now func() time.Time
}

// Dashboard is the http.Handler for /ui/ and the dashboard's /api/v1/
// routes. Close stops its traffic sampler.
type Dashboard struct {
	o        Options
	usageSrc atomic.Pointer[UsageSource]
	pullSrc  atomic.Pointer[PullSource]
	tokenSum [32]byte
	mux      *http.ServeMux
	samples  *sampler
	started  time.Time
	stop     context.CancelFunc
	done     chan struct{}
}

// Errors of New.
var (
	ErrMissing  = errors.New("dashboard: proxy, store and gatherer are required")
	ErrNoAccess = errors.New("dashboard: needs an admin token or public_read_only")
)

// New builds the dashboard and starts its traffic sampler.
func New(o Options) (*Dashboard, error) {
	if o.Proxy == nil || o.Store == nil || o.Gatherer == nil {
		return nil, ErrMissing
	}
	if o.Token == "" && !o.PublicReadOnly {
		return nil, ErrNoAccess
	}
	if o.SampleInterval < 0 {
		return nil, errors.New("dashboard: sample interval must not be negative")
	}
	if o.SampleInterval == 0 {
		o.SampleInterval = 10 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Replica == "" {
		o.Replica, _ = os.Hostname()
	}
	d := &Dashboard{o: o, tokenSum: sha256.Sum256([]byte(o.Token)), started: o.Now(), done: make(chan struct{})}
	if o.Usage != nil {
		d.SetUsage(o.Usage)
	}
	d.samples = newSampler(o.SampleInterval)
	d.routes()
	ctx, cancel := context.WithCancel(context.Background())
	d.stop = cancel
	d.sample()
	go d.runSampler(ctx)
	return d, nil
}

// SetUsage plugs in (or replaces) the usage index after New, for a server
// that builds its index after the dashboard. A source that also has
// IsReady() bool is shown as indexing until it is ready.
func (d *Dashboard) SetUsage(u UsageSource) { d.usageSrc.Store(&u) }

// SetPulls plugs in the pull counts shown with the repositories.
func (d *Dashboard) SetPulls(p PullSource) { d.pullSrc.Store(&p) }

// pulls returns repo's pull count, and its last pull (nil: none known).
func (d *Dashboard) pulls(repo string) (int64, *time.Time) {
	src := d.pullSrc.Load()
	if src == nil {
		return 0, nil
	}
	c := (*src).Count(repo)
	if c.Last.IsZero() {
		return c.Count, nil
	}
	return c.Count, &c.Last
}

func (d *Dashboard) usageSource() UsageSource {
	if u := d.usageSrc.Load(); u != nil {
		return *u
	}
	return nil
}

// Close stops the sampler.
func (d *Dashboard) Close() {
	d.stop()
	<-d.done
}

// ServeHTTP serves /ui/ and /api/.
func (d *Dashboard) ServeHTTP(w http.ResponseWriter, r *http.Request) { d.mux.ServeHTTP(w, r) }

func (d *Dashboard) routes() {
	m := http.NewServeMux()
	sub, _ := fs.Sub(assets, "assets")
	static := http.StripPrefix("/ui/", http.FileServerFS(sub))
	m.Handle("GET /ui/", cacheControl(static))
	m.Handle("GET /ui", http.RedirectHandler("/ui/", http.StatusMovedPermanently))
	read := func(pattern string, h http.HandlerFunc) { m.Handle(pattern, d.readAuth(h)) }
	read("GET /api/v1/session", d.session)
	read("GET /api/v1/overview", d.overview)
	read("GET /api/v1/upstreams", d.upstreams)
	read("GET /api/v1/stats", d.stats)
	read("GET /api/v1/activity", d.activity)
	read("GET /api/v1/fills", d.fills)
	read("GET /api/v1/repositories", d.repositories)
	read("GET /api/v1/repository", d.repository)
	read("GET /api/v1/manifest", d.manifest)
	if d.o.Jobs != nil {
		read("GET /api/v1/prefetch", d.prefetchList)
		read("GET /api/v1/prefetch/{id}", d.prefetchGet)
	}
	admin := d.o.Admin
	if admin == nil {
		admin = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			writeError(w, http.StatusNotFound, "the admin API is disabled (no admin token)")
		})
	}
	m.Handle("/api/", admin)
	d.mux = m
}

// cacheControl lets the browser revalidate the embedded assets every time
// (they are small; ETags are not set by embed, Last-Modified is zero).
func cacheControl(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-cache")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'")
		h.ServeHTTP(w, r)
	})
}

// authState is what a request may do.
type authState int

const (
	refused authState = iota
	anonymous
	admin
)

// check classifies a request's bearer token, as the admin API does:
// both sides hashed, compared in constant time.
func (d *Dashboard) check(r *http.Request) authState {
	h := r.Header.Get("Authorization")
	if h == "" {
		if d.o.PublicReadOnly {
			return anonymous
		}
		return refused
	}
	got, ok := strings.CutPrefix(h, "Bearer ")
	sum := sha256.Sum256([]byte(got))
	if !ok || d.o.Token == "" || subtle.ConstantTimeCompare(sum[:], d.tokenSum[:]) != 1 {
		return refused
	}
	return admin
}

// readAuth admits a read with the token, or without one when the
// dashboard is public read-only. A wrong token is always refused.
func (d *Dashboard) readAuth(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if d.check(r) == refused {
			w.Header().Set("WWW-Authenticate", `Bearer realm="stowage-admin"`)
			writeError(w, http.StatusUnauthorized, "a valid bearer token is required")
			return
		}
		w.Header().Set("Cache-Control", "no-store")
		next.ServeHTTP(w, r)
	})
}

func (d *Dashboard) session(w http.ResponseWriter, r *http.Request) {
	st := d.check(r)
	writeJSON(w, http.StatusOK, map[string]any{
		"authenticated":    st == admin,
		"public_read_only": d.o.PublicReadOnly,
		"can_write":        st == admin && d.o.Admin != nil,
		"version":          d.o.Version,
		"replica":          d.o.Replica,
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}
