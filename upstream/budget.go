package upstream

import (
	"context"
	"errors"
	"log/slog"
	"net/url"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/stowage/stowage/config"
)

// Budget is the bandwidth budget of one Stowage process: the per-upstream
// caps (config.Limits.Bandwidth) and the link caps (config.Link), each a
// token bucket from golang.org/x/time/rate, enforced on response body
// reads. Client traffic goes first: while a client-class body is open on a
// capped budget, prefetch-class bodies may take at most
// config.Link.PrefetchShare of it; with no client waiting, prefetch takes
// the whole budget. With a BudgetStore (Redis) the caps hold for every
// replica sharing the store; without, for this process only.
//
// Build one Budget per process with NewBudget and give it to every upstream
// client (WithBudget). It is safe for concurrent use.
type Budget struct {
	link  config.Link
	share float64
	opts  budgetOptions
	m     *budgetMetrics
	fb    *fallback

	mu      sync.Mutex
	buckets map[string]*bucket
}

// BudgetOption configures a Budget.
type BudgetOption func(*budgetOptions) error

type budgetOptions struct {
	store  BudgetStore
	reg    prometheus.Registerer
	logger *slog.Logger
	retry  time.Duration // how long a failed store is left alone
}

// WithBudgetStore shares the budgets with the other replicas through s
// (proxy/cluster's Redis store). When s fails, the process falls back to
// its own limits, logs it, and asks s again after a while.
func WithBudgetStore(s BudgetStore) BudgetOption {
	return func(o *budgetOptions) error {
		if s == nil {
			return errors.New("upstream: nil budget store")
		}
		o.store = s
		return nil
	}
}

// WithBudgetRegisterer registers the budget's metrics on r.
func WithBudgetRegisterer(r prometheus.Registerer) BudgetOption {
	return func(o *budgetOptions) error {
		o.reg = r
		return nil
	}
}

// WithBudgetLogger sets the logger for store failures.
func WithBudgetLogger(l *slog.Logger) BudgetOption {
	return func(o *budgetOptions) error {
		if l == nil {
			return errors.New("upstream: nil logger")
		}
		o.logger = l
		return nil
	}
}

// NewBudget builds the budget for link (config.Config.Link); the
// per-upstream caps come from each client's config.
func NewBudget(link config.Link, opts ...BudgetOption) (*Budget, error) {
	o := budgetOptions{logger: slog.New(slog.DiscardHandler), retry: 10 * time.Second}
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return nil, err
		}
	}
	if link.Bandwidth < 0 || link.PrefetchShare < 0 || link.PrefetchShare > 100 {
		return nil, errors.New("upstream: link bandwidth must not be negative and prefetch_share must be within 0-100%")
	}
	m, err := newBudgetMetrics(o.reg)
	if err != nil {
		return nil, err
	}
	if o.store != nil {
		m.shared.Set(1)
	}
	return &Budget{
		link: link, share: link.PrefetchShare.Fraction(), opts: o, m: m,
		fb:      &fallback{log: o.logger, retry: o.retry, gauge: m.shared},
		buckets: map[string]*bucket{},
	}, nil
}

// upstreamBucket is the bucket of one upstream's bandwidth cap (nil: none).
func (b *Budget) upstreamBucket(host string, bw config.Bandwidth) *bucket {
	if bw <= 0 {
		return nil
	}
	return b.bucket("upstream:"+host, float64(bw))
}

// linkName names the link a request went through: the forward proxy's
// host:port, or "direct". Never its credentials.
func linkName(proxy *url.URL) string {
	if proxy == nil {
		return "direct"
	}
	return proxy.Host
}

// linkBucket is the bucket of the link named name (nil: not capped).
func (b *Budget) linkBucket(name string) *bucket {
	if b.link.Bandwidth <= 0 || (name == "direct" && !b.link.Direct) {
		return nil
	}
	return b.bucket("link:"+name, float64(b.link.Bandwidth))
}

func (b *Budget) bucket(key string, r float64) *bucket {
	b.mu.Lock()
	defer b.mu.Unlock()
	if bk, ok := b.buckets[key]; ok {
		return bk
	}
	bk := newBucket(key, r, b.share)
	if b.opts.store != nil {
		bk.remote = newRemoteBucket(b.opts.store, key, r, b.share, b.fb)
	}
	b.m.capacity.WithLabelValues(key).Set(r)
	b.buckets[key] = bk
	return bk
}

// bucket is one capped budget: lim paces every byte; pre additionally
// paces prefetch bytes, at share*rate while clients are active and at rate
// otherwise (so it never binds then).
type bucket struct {
	key   string
	rate  float64
	share float64
	chunk int
	lim   *rate.Limiter
	pre   *rate.Limiter

	mu      sync.Mutex
	clients int
	idle    chan struct{} // closed while clients == 0
	remote  *remoteBucket // nil: per process only
}

func newBucket(key string, r, share float64) *bucket {
	chunk := chunkFor(r)
	idle := make(chan struct{})
	close(idle)
	return &bucket{
		key: key, rate: r, share: share, chunk: chunk,
		lim:  rate.NewLimiter(rate.Limit(r), chunk),
		pre:  rate.NewLimiter(rate.Limit(r), chunk),
		idle: idle,
	}
}

// chunkFor is the largest read paid at once on a bucket of rate r bytes
// per second: about 1/16 s of traffic, between 1 KiB and 64 KiB, so that a
// class change or a new client is felt within a fraction of a second.
func chunkFor(r float64) int {
	return int(min(max(r/16, 1<<10), 64<<10))
}

// join and leave count the open client-class bodies; the first client
// lowers prefetch to its share, the last one gives it the whole budget.
func (bk *bucket) join(c Class) {
	if c != ClassClient {
		return
	}
	bk.mu.Lock()
	defer bk.mu.Unlock()
	bk.clients++
	if bk.clients == 1 && bk.share > 0 {
		// (A 0% share holds prefetch in waitTurn instead: a zero rate would
		// make the limiter spend its burst for good.)
		now := time.Now()
		bk.pre.SetLimitAt(now, rate.Limit(bk.rate*bk.share))
		// Spend what prefetch saved up at the full rate, so that it starts
		// at its share right away rather than after a burst.
		bk.pre.ReserveN(now, bk.chunk)
	}
	if bk.clients == 1 {
		bk.idle = make(chan struct{})
	}
}

func (bk *bucket) leave(c Class) {
	if c != ClassClient {
		return
	}
	bk.mu.Lock()
	defer bk.mu.Unlock()
	bk.clients--
	if bk.clients == 0 {
		close(bk.idle)
		bk.pre.SetLimit(rate.Limit(bk.rate))
	}
}

// busy returns whether clients are active and, if so, a channel closed
// when they all leave.
func (bk *bucket) busy() (bool, <-chan struct{}) {
	bk.mu.Lock()
	defer bk.mu.Unlock()
	return bk.clients > 0, bk.idle
}

// waitTurn holds a prefetch chunk while clients are active and the share
// is 0%, until they leave or the body becomes client traffic. Other
// shares go through pre instead.
func (bk *bucket) waitTurn(ctx context.Context, class func() Class) error {
	if bk.share > 0 {
		return nil
	}
	for {
		busy, idle := bk.busy()
		if !busy || class() == ClassClient {
			return nil
		}
		t := time.NewTimer(classPoll)
		select {
		case <-idle:
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
		t.Stop()
	}
}

// classPoll is how often a held prefetch body asks whether it became
// client traffic.
const classPoll = 250 * time.Millisecond
