package prefetch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/containerd/platforms"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/stowage/stowage/config/imagelist"
	"github.com/stowage/stowage/proxy"
	"github.com/stowage/stowage/storage"
	"github.com/stowage/stowage/upstream"
)

// Sentinel errors; test with errors.Is.
var (
	// ErrInvalidRequest marks a request the engine cannot start: a bad
	// platform, nothing to fetch.
	ErrInvalidRequest = errors.New("prefetch: invalid request")
	// ErrNoPlatform marks an index with no child for the requested
	// platforms.
	ErrNoPlatform = errors.New("prefetch: no manifest for the requested platforms")
	// ErrUnsupported marks a manifest the engine cannot walk (e.g. Docker
	// schema 1).
	ErrUnsupported = errors.New("prefetch: unsupported manifest")
)

// Fetcher is what the engine needs from the proxy; *proxy.Proxy
// implements it. Blobs and manifests go through the proxy's own fills and
// cache policy, so prefetch and client pulls share every download.
type Fetcher interface {
	EnsureManifest(ctx context.Context, t proxy.Target, ref string) (*proxy.Manifest, error)
	EnsureBlob(ctx context.Context, t proxy.Target, d digest.Digest, progress func(delta int64)) (fromUpstream bool, err error)
	ListTags(ctx context.Context, t proxy.Target) ([]string, error)
	CacheRepository(t proxy.Target) (string, error)
}

var _ Fetcher = (*proxy.Proxy)(nil)

// Option configures an Engine.
type Option func(*options) error

type options struct {
	log         *slog.Logger
	reg         prometheus.Registerer
	concurrency int
	attempts    int
	backoff     time.Duration
}

// WithLogger sets the logger (default: discard).
func WithLogger(l *slog.Logger) Option {
	return func(o *options) error { o.log = l; return nil }
}

// WithRegisterer registers the engine's metrics there (default: a private
// registry).
func WithRegisterer(r prometheus.Registerer) Option {
	return func(o *options) error { o.reg = r; return nil }
}

// WithConcurrency bounds the blobs downloaded at once (default 4); twice
// as many images are resolved at once, so the download slots stay busy.
func WithConcurrency(n int) Option {
	return func(o *options) error {
		if n < 1 {
			return fmt.Errorf("%w: concurrency %d", ErrInvalidRequest, n)
		}
		o.concurrency = n
		return nil
	}
}

// WithRetries sets how often one image is tried (attempts >= 1) and the
// first backoff between tries, doubled each time (default 3, 500ms).
// Permanent failures (not found, denied, no platform) are not retried.
func WithRetries(attempts int, backoff time.Duration) Option {
	return func(o *options) error {
		if attempts < 1 || backoff < 0 {
			return fmt.Errorf("%w: retries %d/%s", ErrInvalidRequest, attempts, backoff)
		}
		o.attempts, o.backoff = attempts, backoff
		return nil
	}
}

// Engine runs prefetches. It is safe for concurrent Runs; each Run
// deduplicates blobs within itself, and the proxy's fill registry
// deduplicates across Runs and client pulls.
type Engine struct {
	f     Fetcher
	store *storage.Store
	log   *slog.Logger
	m     *metrics
	o     options
}

// New builds an Engine over a Fetcher (the proxy). store, when not nil,
// receives the pins of every named list; pass the proxy's store.
func New(f Fetcher, store *storage.Store, opts ...Option) (*Engine, error) {
	if f == nil {
		return nil, errors.New("prefetch: fetcher is required")
	}
	o := options{log: slog.New(slog.DiscardHandler), concurrency: 4, attempts: 3,
		backoff: 500 * time.Millisecond}
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return nil, err
		}
	}
	if o.reg == nil {
		o.reg = prometheus.NewRegistry()
	}
	m, err := newMetrics(o.reg)
	if err != nil {
		return nil, fmt.Errorf("prefetch: metrics: %w", err)
	}
	return &Engine{f: f, store: store, log: o.log, m: m, o: o}, nil
}

// NamedList is a parsed list and the name its pin is recorded under
// (usually the file's base name).
type NamedList struct {
	Name string
	List *imagelist.List
}

// Request is one prefetch run.
type Request struct {
	// Lists are parsed image lists. Their Problems are copied into the
	// Report; their Rules are expanded with the upstream tag list.
	Lists []NamedList
	// Images are inline references ("ghcr.io/org/app:v1"); their pin is
	// InlinePin.
	Images []string
	// InlinePin names the pin of Images (default "inline").
	InlinePin string
	// Platforms filters image indexes ("linux/amd64", "linux/arm64/v8");
	// empty fetches every child.
	Platforms []string
	// NoPins skips recording pins.
	NoPins bool
	// ListOptionsApplied says the caller built the proxy with the lists'
	// registry options (WithListCredentials), so they are not reported as
	// ignored.
	ListOptionsApplied bool
}

// Run fetches everything the request names and reports per image. The
// error is only for a request that cannot start (ErrInvalidRequest) or a
// cancelled context; failed images are in the Report (Report.Failed).
func (e *Engine) Run(ctx context.Context, req Request, obs Observer) (*Report, error) {
	ctx = upstream.WithClass(ctx, upstream.ClassPrefetch) // yields to clients on a capped link
	if obs == nil {
		obs = NopObserver{}
	}
	match, err := platformMatcher(req.Platforms)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	r := newRun(e, match, obs)
	rep := &Report{Started: start, Platforms: req.Platforms}
	items := r.plan(ctx, req, rep)
	obs.Planned(len(items))
	if pl, ok := obs.(refsPlanner); ok {
		pl.PlannedRefs(itemKeys(items))
	}
	rep.Images = r.fetchAll(ctx, items)
	rep.finish(time.Since(start))
	if !req.NoPins && e.store != nil {
		if err := r.writePins(ctx, rep); err != nil {
			rep.Problems = append(rep.Problems, "pins: "+err.Error())
			e.log.Error("writing pins", "err", err)
		}
	}
	if err := ctx.Err(); err != nil {
		return rep, err
	}
	return rep, nil
}

// platformMatcher parses the filter; nil means every platform.
func platformMatcher(specs []string) (platforms.MatchComparer, error) {
	if len(specs) == 0 {
		return nil, nil
	}
	ps := make([]ocispec.Platform, 0, len(specs))
	for _, s := range specs {
		p, err := platforms.Parse(s)
		if err != nil {
			return nil, fmt.Errorf("%w: platform %q: %w", ErrInvalidRequest, s, err)
		}
		ps = append(ps, p)
	}
	return platforms.Any(ps...), nil
}
