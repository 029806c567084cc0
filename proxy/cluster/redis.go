// Package cluster coordinates Stowage replicas that share one storage
// backend: Redis leases make one replica download each blob while the
// others wait for its commit.
//
// Redis may fail (down, slow, partitioned) without failing a client
// request: every Redis call is bounded by a short timeout, and after a
// failure a circuit breaker skips Redis for a backoff window, during which
// each replica coordinates its fills only with itself. That stays correct
// (commits are atomic and identical; at worst a blob is downloaded once per
// replica) and costs at most one timeout per window instead of one per
// blob.
package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
)

// DefaultTimeout bounds each Redis call when none is configured.
const DefaultTimeout = 500 * time.Millisecond

// DefaultBackoff is how long the breaker keeps Redis out of the way after
// a failure before one call probes it again.
const DefaultBackoff = 5 * time.Second

// renewScript extends a lease only while this owner holds it.
var renewScript = redis.NewScript(`if redis.call("get", KEYS[1]) == ARGV[1] then return redis.call("pexpire", KEYS[1], ARGV[2]) else return 0 end`)

// releaseScript deletes a lease only while this owner holds it.
var releaseScript = redis.NewScript(`if redis.call("get", KEYS[1]) == ARGV[1] then return redis.call("del", KEYS[1]) else return 0 end`)

// NewRedisClient returns a client for the Redis at addr whose every
// operation (dial, pool wait, write, read) is bounded by timeout (0:
// DefaultTimeout) and honours its context's deadline, with no retries of
// commands or dials: a Redis that accepts connections and never answers,
// or refuses them, costs at most one timeout.
func NewRedisClient(addr, password string, db int, timeout time.Duration) *redis.Client {
	return redis.NewClient(clientOptions(addr, password, db, timeout))
}

func clientOptions(addr, password string, db int, timeout time.Duration) *redis.Options {
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	return &redis.Options{
		Addr:                  addr,
		Password:              password,
		DB:                    db,
		DialTimeout:           timeout,
		ReadTimeout:           timeout,
		WriteTimeout:          timeout,
		PoolTimeout:           timeout,
		ContextTimeoutEnabled: true,
		MaxRetries:            -1,
		DialerRetries:         1,
	}
}

// Option configures RedisLeases.
type Option func(*RedisLeases)

// WithTimeout bounds each Redis call (default DefaultTimeout).
func WithTimeout(d time.Duration) Option {
	return func(l *RedisLeases) {
		if d > 0 {
			l.timeout = d
		}
	}
}

// WithBackoff sets how long Redis is skipped after a failure (default
// DefaultBackoff).
func WithBackoff(d time.Duration) Option {
	return func(l *RedisLeases) {
		if d > 0 {
			l.backoff = d
		}
	}
}

// WithLogger sets where breaker transitions are logged (once per episode).
func WithLogger(log *slog.Logger) Option {
	return func(l *RedisLeases) {
		if log != nil {
			l.log = log
		}
	}
}

// WithMetrics registers the coordinator's metrics with reg.
func WithMetrics(reg prometheus.Registerer) Option {
	return func(l *RedisLeases) { l.reg = reg }
}

// RedisLeases implements proxy.Coordinator with Redis keys set with NX and
// a TTL, renewed while the holder works: a crashed holder's lease expires
// by itself and another replica takes over. When Redis fails, it answers
// as a coordinator of this process alone (see the package comment).
type RedisLeases struct {
	c       redis.UniversalClient
	prefix  string
	owner   string
	ttl     time.Duration
	timeout time.Duration
	backoff time.Duration
	log     *slog.Logger
	reg     prometheus.Registerer
	m       metrics

	mu sync.Mutex
	// down is true from a failure until a call succeeds again (one
	// episode, logged once).
	down bool
	// retryAt is when, while down, the next call may probe Redis.
	retryAt time.Time
	// probing is true while one call probes Redis; the others stay local.
	probing bool
}

type metrics struct {
	errors prometheus.Counter
	trips  prometheus.Counter
	local  prometheus.Counter
	open   prometheus.Gauge
}

func newMetrics() metrics {
	return metrics{
		errors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "stowage_redis_errors_total",
			Help: "Redis calls of the fill coordinator that failed or timed out.",
		}),
		trips: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "stowage_redis_breaker_trips_total",
			Help: "Times Redis became unavailable and fills fell back to local coordination.",
		}),
		local: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "stowage_redis_local_decisions_total",
			Help: "Coordinator calls answered without Redis (this replica alone) because Redis was unavailable.",
		}),
		open: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "stowage_redis_unavailable",
			Help: "1 while Redis is considered unavailable and fills are coordinated locally.",
		}),
	}
}

// NewRedisLeases returns leases under prefix with the given TTL (renewed
// every TTL/3 while held).
func NewRedisLeases(c redis.UniversalClient, prefix string, ttl time.Duration, opts ...Option) (*RedisLeases, error) {
	if c == nil {
		return nil, errors.New("cluster: nil redis client")
	}
	if ttl < 300*time.Millisecond {
		return nil, errors.New("cluster: lease TTL must be at least 300ms")
	}
	var id [12]byte
	if _, err := rand.Read(id[:]); err != nil {
		return nil, err
	}
	l := &RedisLeases{
		c: c, prefix: prefix, owner: hex.EncodeToString(id[:]), ttl: ttl,
		timeout: DefaultTimeout, backoff: DefaultBackoff,
		log: slog.New(slog.DiscardHandler), m: newMetrics(),
	}
	for _, o := range opts {
		o(l)
	}
	if l.reg != nil {
		for _, c := range []prometheus.Collector{l.m.errors, l.m.trips, l.m.local, l.m.open} {
			if err := l.reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return l, nil
}

// allow reports whether a call may go to Redis now. While Redis is down
// only one call per backoff window probes it; the others are answered
// locally.
func (l *RedisLeases) allow() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.down {
		return true
	}
	if l.probing || time.Now().Before(l.retryAt) {
		l.m.local.Inc()
		return false
	}
	l.probing = true
	return true
}

// done records the outcome of a call allow let through. A failure caused
// by the caller's own context ending is not Redis's fault.
func (l *RedisLeases) done(ctx context.Context, err error) {
	if err != nil && ctx.Err() != nil {
		l.mu.Lock()
		l.probing = false
		l.mu.Unlock()
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.probing = false
	if err == nil {
		if l.down {
			l.down = false
			l.m.open.Set(0)
			l.log.Info("redis is back; coordinating fills across replicas again")
		}
		return
	}
	l.m.errors.Inc()
	l.retryAt = time.Now().Add(l.backoff)
	if !l.down {
		l.down = true
		l.m.trips.Inc()
		l.m.open.Set(1)
		l.log.Warn("redis unavailable; coordinating fills locally until it answers again",
			"err", err, "retry_every", l.backoff)
	}
}

// call runs f against Redis bounded by the timeout, through the breaker.
// ok is false when the breaker kept Redis out or the call failed for a
// reason other than the caller's context.
func (l *RedisLeases) call(ctx context.Context, f func(ctx context.Context) error) (ok bool, err error) {
	if !l.allow() {
		return false, nil
	}
	cctx, cancel := context.WithTimeout(ctx, l.timeout)
	defer cancel()
	err = f(cctx)
	l.done(ctx, err)
	if err != nil {
		if ctx.Err() != nil {
			return false, ctx.Err()
		}
		return false, nil
	}
	return true, nil
}

// TryAcquire takes the lease for key if nobody holds it. When Redis is
// unavailable it reports the lease as acquired by this process alone (with
// a release that does nothing): the fill then proceeds locally.
func (l *RedisLeases) TryAcquire(ctx context.Context, key string) (func(), bool, error) {
	k := l.prefix + key
	var got bool
	ok, err := l.call(ctx, func(ctx context.Context) error {
		var err error
		got, err = l.c.SetNX(ctx, k, l.owner, l.ttl).Result()
		return err
	})
	if err != nil {
		return nil, false, err
	}
	if !ok {
		return func() {}, true, nil
	}
	if !got {
		return nil, false, nil
	}
	// The renewals end when release is called, also in the middle of a
	// call to a hanging Redis.
	rctx, stopRenew := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(l.ttl / 3)
		defer t.Stop()
		for {
			select {
			case <-rctx.Done():
				return
			case <-t.C:
				// A failed renewal is retried at the next tick; if the
				// lease expires meanwhile another replica may start a
				// second, equally correct download.
				_, _ = l.call(rctx, func(ctx context.Context) error {
					return renewScript.Run(ctx, l.c, []string{k}, l.owner, l.ttl.Milliseconds()).Err()
				})
			}
		}
	})
	var once sync.Once
	release := func() {
		once.Do(func() {
			stopRenew()
			wg.Wait()
			// Bounded by the timeout, and skipped while Redis is known to
			// be down (the lease then expires by itself): a hanging Redis
			// never holds the fill's clients at their last byte.
			_, _ = l.call(context.WithoutCancel(ctx), func(ctx context.Context) error {
				return releaseScript.Run(ctx, l.c, []string{k}, l.owner).Err()
			})
		})
	}
	return release, true, nil
}

// Held reports whether anyone holds key. When Redis is unavailable it
// reports false: the caller then takes the (local) lease itself.
func (l *RedisLeases) Held(ctx context.Context, key string) (bool, error) {
	var n int64
	ok, err := l.call(ctx, func(ctx context.Context) error {
		var err error
		n, err = l.c.Exists(ctx, l.prefix+key).Result()
		return err
	})
	if err != nil || !ok {
		return false, err
	}
	return n > 0, nil
}

// Unavailable reports whether the breaker currently considers Redis down.
func (l *RedisLeases) Unavailable() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.down
}
