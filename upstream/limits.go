package upstream

import (
	"context"
	"errors"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/semaphore"
	"golang.org/x/time/rate"

	"github.com/stowage/stowage/config"
)

// limits applies one upstream's config.Limits and the link budget to its
// requests: a connection slot from the request's start until its body is
// closed, and paced body reads.
type limits struct {
	host   string
	budget *Budget
	up     *bucket             // the upstream's bandwidth cap; nil: none
	conns  *semaphore.Weighted // nil: no connection cap
	// preConns keeps the last slot for clients: prefetch requests hold
	// at most Connections-1 (nil when Connections is 1).
	preConns *semaphore.Weighted
	inUse    prometheus.Gauge
	proxy    proxyFunc
	// waiting counts requests queued for a connection slot.
	waiting atomic.Int64
}

func newLimits(host string, l config.Limits, b *Budget, proxy proxyFunc) *limits {
	lim := &limits{host: host, budget: b, up: b.upstreamBucket(host, l.Bandwidth), proxy: proxy,
		inUse: b.m.connections.WithLabelValues(host)}
	if l.Connections > 0 {
		lim.conns = semaphore.NewWeighted(int64(l.Connections))
		if l.Connections > 1 {
			lim.preConns = semaphore.NewWeighted(int64(l.Connections - 1))
		}
		b.m.connCap.WithLabelValues(host).Set(float64(l.Connections))
	}
	return lim
}

// acquire takes a connection slot; release gives it back (call it once).
// A prefetch request never takes the last free slot, so a client's
// request does not queue behind a prefetch download.
func (l *limits) acquire(ctx context.Context) (release func(), err error) {
	var pre bool
	if l.conns != nil {
		l.waiting.Add(1)
		defer l.waiting.Add(-1)
		cls := ClassOf(ctx)
		start := time.Now()
		defer func() {
			if err == nil {
				l.budget.m.connWait.WithLabelValues(l.host, min(cls, ClassPrefetch).String()).Observe(time.Since(start).Seconds())
			}
		}()
		if l.preConns != nil && cls == ClassPrefetch {
			if err := l.preConns.Acquire(ctx, 1); err != nil {
				return nil, err
			}
			pre = true
		}
		if err := l.conns.Acquire(ctx, 1); err != nil {
			if pre {
				l.preConns.Release(1)
			}
			return nil, err
		}
	}
	l.inUse.Inc()
	var once sync.Once
	return func() {
		once.Do(func() {
			l.inUse.Dec()
			if l.conns != nil {
				l.conns.Release(1)
			}
			if pre {
				l.preConns.Release(1)
			}
		})
	}, nil
}

// early counts a client request as active on its budgets from its start,
// before its body exists, so prefetch yields while the client waits for
// the answer's headers too; call the returned func once the body is
// wrapped (wrap counts it from then on) or the request failed.
func (l *limits) early(ctx context.Context, req *http.Request) (done func()) {
	cls := min(ClassOf(ctx), ClassPrefetch)
	if cls != ClassClient {
		return func() {}
	}
	_, buckets := l.buckets(req)
	for _, bk := range buckets {
		bk.join(cls)
	}
	return func() {
		for _, bk := range buckets {
			bk.leave(cls)
		}
	}
}

// buckets are the budgets req draws on, its upstream's and its link's,
// and the name of its link (the forward proxy the transport picks for it).
func (l *limits) buckets(req *http.Request) (string, []*bucket) {
	link := "direct"
	if l.proxy != nil && req != nil {
		if u, err := l.proxy(req); err == nil {
			link = linkName(u)
		}
	}
	var buckets []*bucket
	if l.up != nil {
		buckets = append(buckets, l.up)
	}
	if bk := l.budget.linkBucket(link); bk != nil {
		buckets = append(buckets, bk)
	}
	return link, buckets
}

// wrap paces resp's body and releases the connection slot when it is
// closed. The link is the forward proxy of the final request (after
// redirects), as the transport chose it.
func (l *limits) wrap(ctx context.Context, resp *http.Response, release func()) io.ReadCloser {
	link, buckets := l.buckets(resp.Request)
	r := &budgetReader{
		body: resp.Body, ctx: ctx, class: classFunc(ctx), buckets: buckets,
		release: release, m: l.budget.m, chunk: 32 << 10,
		bytes: [2]prometheus.Counter{
			l.budget.m.bytes.WithLabelValues(l.host, link, ClassClient.String()),
			l.budget.m.bytes.WithLabelValues(l.host, link, ClassPrefetch.String()),
		},
	}
	for _, bk := range buckets {
		r.chunk = min(r.chunk, bk.chunk)
	}
	r.cur = min(r.class(), ClassPrefetch)
	for _, bk := range buckets {
		bk.join(r.cur)
	}
	return r
}

// budgetReader pays for every chunk it reads with tokens of its buckets
// (the upstream's cap, the link's), in the class its context names at that
// moment, and counts the bytes by class.
type budgetReader struct {
	body    io.ReadCloser
	ctx     context.Context //nolint:containedctx // the request's context, read per chunk
	class   func() Class
	buckets []*bucket
	release func()
	m       *budgetMetrics
	bytes   [2]prometheus.Counter // by class
	chunk   int

	mu     sync.Mutex
	cur    Class
	closed bool
	waited time.Duration
}

func (r *budgetReader) Read(p []byte) (int, error) {
	cls := r.switchClass()
	if len(r.buckets) > 0 && len(p) > r.chunk {
		p = p[:r.chunk]
	}
	n, err := r.body.Read(p)
	if n > 0 {
		r.bytes[cls].Add(float64(n))
		if len(r.buckets) > 0 {
			// A wait that ends with the context leaves the next Read to
			// fail: the body's request shares that context.
			_ = r.pay(cls, n)
		}
	}
	return n, err
}

// switchClass moves the body to the class its context names now.
func (r *budgetReader) switchClass() Class {
	cls := r.class()
	cls = min(cls, ClassPrefetch) // an unknown class is as patient as prefetch
	r.mu.Lock()
	defer r.mu.Unlock()
	if cls != r.cur && !r.closed {
		for _, bk := range r.buckets {
			bk.join(cls)
			bk.leave(r.cur)
		}
		r.cur = cls
	}
	return cls
}

// pay waits until every bucket grants n bytes of class cls.
func (r *budgetReader) pay(cls Class, n int) error {
	start := time.Now()
	defer func() {
		r.mu.Lock()
		r.waited += time.Since(start)
		r.mu.Unlock()
	}()
	if cls == ClassPrefetch {
		for _, bk := range r.buckets {
			if err := bk.waitTurn(r.ctx, r.class); err != nil {
				return err
			}
		}
	}
	if err := reserveAll(r.ctx, r.buckets, cls, n); err != nil {
		return err
	}
	for _, bk := range r.buckets {
		if bk.remote != nil {
			if err := bk.remote.take(r.ctx, cls, r.class, int64(n)); err != nil {
				return err
			}
		}
	}
	return nil
}

// reserveAll reserves n tokens on every limiter that paces class cls and
// sleeps for the longest delay; all reservations are cancelled if ctx ends
// first.
func reserveAll(ctx context.Context, buckets []*bucket, cls Class, n int) error {
	now := time.Now()
	var rs []*rate.Reservation
	var delay time.Duration
	add := func(l *rate.Limiter) {
		res := l.ReserveN(now, n)
		rs = append(rs, res)
		delay = max(delay, res.DelayFrom(now))
	}
	for _, bk := range buckets {
		add(bk.lim)
		if cls == ClassPrefetch {
			add(bk.pre)
		}
	}
	for _, res := range rs {
		if !res.OK() {
			// n exceeds a burst: cannot happen with chunk-sized reads.
			return errors.New("upstream: budget chunk larger than its burst")
		}
	}
	if delay <= 0 {
		return nil
	}
	t := time.NewTimer(delay)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		for _, res := range rs {
			res.Cancel()
		}
		return ctx.Err()
	}
}

// Close closes the body, leaves the buckets, records the time this body
// waited for the budget and releases the connection slot.
func (r *budgetReader) Close() error {
	err := r.body.Close()
	r.mu.Lock()
	first := !r.closed
	r.closed = true
	cur, waited := r.cur, r.waited
	r.mu.Unlock()
	if first {
		for _, bk := range r.buckets {
			bk.leave(cur)
		}
		if len(r.buckets) > 0 {
			r.m.waited.WithLabelValues(cur.String()).Observe(waited.Seconds())
		}
		r.release()
	}
	return err
}
