// Package lead decides which replica of a cache runs eviction passes: the
// one holding a shared lease (in Redis). The holder renews it while it
// lives; when it stops or dies the lease expires and another replica takes
// it at its next step. Other replicas skip their passes, and ask the holder
// for one (Request) when they need room now, e.g. after a write failed
// for lack of space.
//
// A replica that cannot reach the lease store (Redis down, slow or
// partitioned) stops leading at once, skips passes while the store may
// just have hiccuped (for one lease TTL: a blip must not make every replica
// evict over its partial view), and then falls back to Local: it runs
// passes over its own view, as a replica without Redis does. A request for
// room made meanwhile (Request) is answered with a local pass at once:
// space is needed now. A leader stops being Leader when its lease's
// validity, counted from before the call that took or renewed it, ends
// without a successful renewal, so two replicas never both believe they
// lead while the store is reachable.
package lead

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"
)

// Role is what a replica does about eviction passes.
type Role int

const (
	// Follower: another replica holds the lease; skip passes.
	Follower Role = iota
	// Leader: this replica holds the lease and runs the passes.
	Leader
	// Local: the lease store is unavailable; run passes over the local
	// view, as without a cluster.
	Local
)

func (r Role) String() string {
	switch r {
	case Leader:
		return "leader"
	case Local:
		return "local"
	default:
		return "follower"
	}
}

// Backend is the shared lease store (proxy/cluster's Redis
// implementation). Every call is bounded in time by the implementation.
type Backend interface {
	// Acquire takes the lease for ttl when it is free, or extends it when
	// this replica holds it already. It reports whether this replica holds
	// it now.
	Acquire(ctx context.Context, ttl time.Duration) (bool, error)
	// Release gives the lease up if this replica holds it.
	Release(ctx context.Context) error
	// Request asks the holder for a pass soon.
	Request(ctx context.Context) error
	// TakeRequest reports whether a pass was requested, and clears the
	// request.
	TakeRequest(ctx context.Context) (bool, error)
}

// Lead tracks this replica's role. Create it with New and run it with Run.
type Lead struct {
	b     Backend
	ttl   time.Duration
	every time.Duration
	log   *slog.Logger

	mu         sync.Mutex
	role       Role
	validUntil time.Time // while Leader: the lease's validity
	down       bool      // the backend failed (one episode, logged once)
	downSince  time.Time // when the episode began
	wake       chan struct{}
}

// Option configures a Lead.
type Option func(*Lead)

// WithLogger sets where role changes are logged.
func WithLogger(log *slog.Logger) Option {
	return func(l *Lead) {
		if log != nil {
			l.log = log
		}
	}
}

// WithInterval sets how often the lease is renewed or sought (default:
// a third of its TTL).
func WithInterval(d time.Duration) Option { return func(l *Lead) { l.every = d } }

// New returns a Lead over b with leases of ttl.
func New(b Backend, ttl time.Duration, opts ...Option) (*Lead, error) {
	if b == nil {
		return nil, errors.New("lead: nil backend")
	}
	if ttl < time.Second {
		return nil, errors.New("lead: lease TTL must be at least 1s")
	}
	l := &Lead{b: b, ttl: ttl, every: ttl / 3, log: slog.New(slog.DiscardHandler), wake: make(chan struct{}, 1)}
	for _, o := range opts {
		o(l)
	}
	if l.every <= 0 || l.every >= ttl {
		return nil, errors.New("lead: interval must be positive and shorter than the TTL")
	}
	return l, nil
}

// Role returns the current role. A Leader whose lease validity has ended
// without a renewal is a Follower (it cannot know who holds the lease); a
// replica that cannot reach the store is a Follower for one TTL, then
// Local.
func (l *Lead) Role() Role {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.down {
		if time.Since(l.downSince) < l.ttl {
			return Follower
		}
		return Local
	}
	if l.role == Leader && !time.Now().Before(l.validUntil) {
		return Follower
	}
	return l.role
}

// Wake receives when the leader should run a pass: it has just taken the
// lease, or another replica requested one.
func (l *Lead) Wake() <-chan struct{} { return l.wake }

func (l *Lead) signal() {
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// Request asks for a pass soon, wherever it runs: at once on a Leader or
// a Local replica (through Wake), else from the holder of the lease. It
// reports whether the caller should run a local pass itself now: the
// store cannot be reached to ask. It does I/O bounded by the backend's
// timeout.
func (l *Lead) Request(ctx context.Context) (local bool) {
	if r := l.Role(); r != Follower {
		l.signal()
		return false
	}
	if err := l.b.Request(ctx); err != nil {
		l.failed(ctx, err)
		return ctx.Err() == nil
	}
	return false
}

// Run renews or seeks the lease every interval until ctx ends, then
// releases it (bounded by a short deadline of its own).
func (l *Lead) Run(ctx context.Context) error {
	t := time.NewTicker(l.every)
	defer t.Stop()
	for {
		l.Step(ctx)
		select {
		case <-ctx.Done():
			l.release(ctx)
			return nil
		case <-t.C:
		}
	}
}

func (l *Lead) release(ctx context.Context) {
	l.mu.Lock()
	was := l.role == Leader
	l.role, l.validUntil = Follower, time.Time{}
	l.mu.Unlock()
	if !was {
		return
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := l.b.Release(rctx); err != nil {
		l.log.Warn("releasing the eviction lease", "err", err)
	}
}

// Step takes or renews the lease once, and as the leader takes a pending
// request. Run calls it every interval.
func (l *Lead) Step(ctx context.Context) {
	start := time.Now()
	held, err := l.b.Acquire(ctx, l.ttl)
	if ctx.Err() != nil {
		return
	}
	if err != nil {
		l.failed(ctx, err)
		return
	}
	l.mu.Lock()
	prev := l.role
	if held {
		l.role, l.validUntil = Leader, start.Add(l.ttl)
	} else {
		l.role, l.validUntil = Follower, time.Time{}
	}
	wasDown := l.down
	l.down, l.downSince = false, time.Time{}
	l.mu.Unlock()
	if wasDown {
		l.log.Info("eviction lease store is back; one replica at a time evicts again")
	}
	if held && prev != Leader {
		l.log.Info("this replica now runs the cluster's eviction passes")
		l.signal() // catch up on what the previous leader may have left
	}
	if prev == Leader && !held {
		l.log.Warn("this replica lost the eviction lease")
	}
	if !held {
		return
	}
	wanted, err := l.b.TakeRequest(ctx)
	if err != nil {
		l.failed(ctx, err)
		return
	}
	if wanted {
		l.signal()
	}
}

// failed starts (or continues) an episode without the store after a
// backend error, logged once. A leader stops leading at once: its lease
// may still be valid, but it cannot renew it. Role turns Local one TTL
// into the episode.
func (l *Lead) failed(ctx context.Context, err error) {
	if ctx.Err() != nil {
		return
	}
	l.mu.Lock()
	l.role, l.validUntil = Follower, time.Time{}
	first := !l.down
	if first {
		l.down, l.downSince = true, time.Now()
	}
	l.mu.Unlock()
	if first {
		l.log.Warn("eviction lease store unavailable; evicting over this replica's own view if it does not answer within the lease TTL",
			"err", err, "ttl", l.ttl)
	}
}
