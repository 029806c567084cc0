package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/mux"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/singleflight"

	"github.com/stowage/stowage/config"
	"github.com/stowage/stowage/proxy/internal/fill"
	"github.com/stowage/stowage/storage"
	"github.com/stowage/stowage/storage/recent"
	"github.com/stowage/stowage/upstream"
)

// UpstreamFactory builds the client for one upstream registry host from its
// effective settings. cmd/proxy passes a function around upstream.New; tests
// wrap it to count or break requests.
type UpstreamFactory func(host string, cfg config.Upstream) (upstream.Registry, error)

// Option configures a Proxy.
type Option func(*options)

type options struct {
	log      *slog.Logger
	reg      prometheus.Registerer
	gatherer prometheus.Gatherer
	now      func() time.Time
	coord    Coordinator
	peers    *PeerConfig
	tags     TagSync
}

// WithLogger sets the logger (default: discard).
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.log = l } }

// WithRegistry sets where metrics are registered and gathered from for
// /metrics (default: a private registry per instance).
func WithRegistry(r *prometheus.Registry) Option {
	return func(o *options) { o.reg, o.gatherer = r, r }
}

// WithClock replaces time.Now (tag TTL tests).
func WithClock(now func() time.Time) Option { return func(o *options) { o.now = now } }

// Proxy is the pull-through cache: an http.Handler serving the registry read
// API from a Store, filling misses from upstreams.
type Proxy struct {
	cfg     *config.Config
	store   *storage.Store
	factory UpstreamFactory
	log     *slog.Logger
	m       *metrics
	now     func() time.Time
	router  *mux.Router
	mem     *memCache
	fills   *fill.Registry
	// hooks keeps a usage index current (SetCacheHooks); serving counts
	// the cache hits streaming, which eviction must leave alone.
	hooks   atomic.Pointer[CacheHooks]
	serving servingSet
	pulls   atomic.Pointer[PullCounter] // SetPullCounter
	down    downHosts
	coord   Coordinator
	peer    *peering // nil: peer streaming off
	tags    TagSync  // nil: tag state shared only through the storage

	metricsHandler http.Handler
	manifestFlight singleflight.Group

	mu        sync.Mutex
	upstreams map[string]upstream.Registry
	tagPages  *tagPageCache

	health health // readiness, disk-full episodes, integrity checks

	// stale keeps the last stale serves (staleserves.go).
	stale *recent.Ring[StaleServe]
}

// New builds a Proxy. cfg must be validated; store and factory are required.
func New(cfg *config.Config, store *storage.Store, factory UpstreamFactory, opts ...Option) (*Proxy, error) {
	if cfg == nil || store == nil || factory == nil {
		return nil, errors.New("proxy: config, store and upstream factory are required")
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	o := options{log: slog.New(slog.DiscardHandler), now: time.Now}
	for _, opt := range opts {
		opt(&o)
	}
	if o.reg == nil {
		r := prometheus.NewRegistry()
		o.reg, o.gatherer = r, r
	}
	m, err := newMetrics(o.reg)
	if err != nil {
		return nil, fmt.Errorf("proxy: metrics: %w", err)
	}
	mem, err := newMemCache(cfg.Cache.MemoryEntries, cfg.Cache.MemoryBytes)
	if err != nil {
		return nil, err
	}
	p := &Proxy{
		stale:     recent.New[StaleServe](StaleServesKept),
		cfg:       cfg,
		store:     store,
		factory:   factory,
		log:       o.log,
		m:         m,
		now:       o.now,
		coord:     o.coord,
		mem:       mem,
		upstreams: map[string]upstream.Registry{},
		tagPages:  newTagPageCache(),
	}
	if o.peers != nil {
		if p.peer, err = newPeering(o.peers, o.coord, o.reg, o.log); err != nil {
			return nil, err
		}
	}
	if o.tags != nil {
		p.tags = o.tags
		o.tags.Watch(func(repo, tag string) { p.mem.forgetTag(repo, tag) })
	}
	p.fills = fill.NewRegistry()
	p.fills.SetMaxRunning(cfg.Cache.Fill.MaxConcurrent)
	p.metricsHandler = promhttp.HandlerFor(o.gatherer, promhttp.HandlerOpts{})
	p.router = p.newRouter()
	return p, nil
}

// ServeHTTP serves the registry API, /healthz and /metrics.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.router.ServeHTTP(w, r)
}

// Close stops running fills, waits for them to end and closes the upstream
// clients. A stopped fill's staging file is handed over on a shared
// filesystem (Store.HandOver: another replica resumes from it), removed
// otherwise.
func (p *Proxy) Close() error {
	p.fills.Close()
	p.health.closeChecks() // background integrity checks
	var errs []error
	if c, ok := p.tags.(io.Closer); ok {
		errs = append(errs, c.Close())
	}
	if p.peer != nil {
		p.peer.client.CloseIdleConnections()
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, u := range p.upstreams {
		if c, ok := u.(io.Closer); ok {
			errs = append(errs, c.Close())
		}
	}
	return errors.Join(errs...)
}

// upstream returns the (cached) client for a registry host.
func (p *Proxy) upstream(host string) (upstream.Registry, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if u, ok := p.upstreams[host]; ok {
		return u, nil
	}
	ucfg, ok := p.cfg.Upstream(host)
	if !ok {
		return nil, fmt.Errorf("%w: %q", errRegistryNotConfigured, host)
	}
	u, err := p.factory(host, ucfg)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", errUpstreamClient, host, err)
	}
	p.upstreams[host] = u
	return u, nil
}

// upstreamCtx bounds a metadata call to the upstream (manifests, tags,
// HEADs): a hung upstream must not hang a client. Blob bodies are bounded by
// the upstream client's stall timeout instead.
func (p *Proxy) upstreamCtx(ctx context.Context, host string) (context.Context, context.CancelFunc) {
	u, _ := p.cfg.Upstream(host)
	t := u.Timeouts
	limit := t.Dial + t.TLSHandshake + t.ResponseHeader + t.Stall
	return context.WithTimeout(ctx, limit)
}
