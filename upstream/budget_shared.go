package upstream

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// BudgetStore shares bandwidth budgets between replicas; proxy/cluster
// implements it on Redis. Keys are budget names ("link:proxy.corp:3128",
// "upstream:docker.io", and the same with ":prefetch" for the prefetch
// share); implementations add their own prefix.
type BudgetStore interface {
	// Take asks for n bytes of the budget key, a bucket refilling at rate
	// bytes per second and holding at most burst. It grants all n or
	// none; when none, retryAfter says when to ask again.
	Take(ctx context.Context, key string, rate, burst, n int64) (granted bool, retryAfter time.Duration, err error)
	// MarkBusy records, for ttl, that a client of this replica is waiting
	// on traffic of budget key.
	MarkBusy(ctx context.Context, key string, ttl time.Duration) error
	// Busy reports whether any replica marked key busy within its ttl.
	Busy(ctx context.Context, key string) (bool, error)
}

// busyTTL is how long a replica's mark that its clients wait lasts; it is
// renewed with every batch a client takes.
const busyTTL = 2 * time.Second

// batchFor is how many bytes a replica takes from the shared budget at
// once: about 1/10 s of the rate, between 16 KiB and 1 MiB. A replica holds
// at most one batch per class ahead, so the cluster exceeds the cap by at
// most that per replica.
func batchFor(r float64) int64 {
	return int64(min(max(r/10, 16<<10), 1<<20))
}

// remoteBucket draws a bucket's bytes from the shared store in batches,
// after the local limiter: the local limiter orders this process's
// classes, the store caps the cluster. The prefetch share holds across the
// cluster too: while any replica marks the budget busy, prefetch batches
// also come out of a "<key>:prefetch" budget of share*rate.
type remoteBucket struct {
	store BudgetStore
	key   string
	rate  float64
	share float64
	batch int64
	fb    *fallback

	refill [2]chan struct{} // one refill at a time per class
	mu     sync.Mutex
	avail  [2]int64
	marked time.Time // last MarkBusy (client refills only)
	// shareHeld: a prefetch batch of the share budget was granted but the
	// main budget not yet (prefetch refills only).
	shareHeld bool
}

func (rb *remoteBucket) take(ctx context.Context, cls Class, class func() Class, n int64) error {
	sem := rb.refill[cls]
	select {
	case sem <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-sem }()
	for {
		rb.mu.Lock()
		if rb.avail[cls] >= n {
			rb.avail[cls] -= n
			rb.mu.Unlock()
			return nil
		}
		rb.mu.Unlock()
		if !rb.fb.shared() {
			return nil // per-process limits only, until the store answers again
		}
		wait, err := rb.refillOnce(ctx, cls, class)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			rb.fb.failed(ctx, err)
			return nil
		}
		rb.fb.ok(ctx)
		if wait > 0 {
			if err := sleepContext(ctx, wait); err != nil {
				return err
			}
		}
	}
}

// refillOnce asks the store for one batch of class cls; it returns how
// long to wait before asking again when the batch was not granted.
func (rb *remoteBucket) refillOnce(ctx context.Context, cls Class, class func() Class) (time.Duration, error) {
	if cls == ClassClient {
		if time.Since(rb.marked) > busyTTL/4 {
			if err := rb.store.MarkBusy(ctx, rb.key, busyTTL); err != nil {
				return 0, err
			}
			rb.marked = time.Now()
		}
	} else {
		busy, err := rb.store.Busy(ctx, rb.key)
		if err != nil {
			return 0, err
		}
		if busy && class() == ClassPrefetch && !rb.shareHeld {
			if rb.share <= 0 {
				return classPoll, nil
			}
			ok, retry, err := rb.store.Take(ctx, rb.key+":prefetch", int64(max(1, rb.rate*rb.share)), rb.batch, rb.batch)
			if err != nil || !ok {
				return max(retry, time.Millisecond), err
			}
			rb.shareHeld = true
		}
	}
	ok, retry, err := rb.store.Take(ctx, rb.key, int64(rb.rate), rb.batch, rb.batch)
	if err != nil {
		return 0, err
	}
	if !ok {
		return max(retry, time.Millisecond), nil
	}
	if cls == ClassPrefetch {
		rb.shareHeld = false
	}
	rb.mu.Lock()
	rb.avail[cls] += rb.batch
	rb.mu.Unlock()
	return 0, nil
}

func newRemoteBucket(s BudgetStore, key string, r, share float64, fb *fallback) *remoteBucket {
	return &remoteBucket{store: s, key: key, rate: r, share: share, batch: batchFor(r), fb: fb,
		refill: [2]chan struct{}{make(chan struct{}, 1), make(chan struct{}, 1)}}
}

// fallback tracks whether the shared store works. After a failure the
// process uses its own limits for retry, then asks the store again; each
// change is logged once.
type fallback struct {
	log   *slog.Logger
	retry time.Duration
	gauge interface{ Set(float64) }

	mu    sync.Mutex
	down  bool
	until time.Time
}

func (f *fallback) shared() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return !f.down || time.Now().After(f.until)
}

func (f *fallback) failed(ctx context.Context, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.down {
		f.log.LogAttrs(ctx, slog.LevelWarn, "shared bandwidth budget unavailable, using this process's own limits",
			slog.String("error", err.Error()), slog.Duration("retry_in", f.retry))
	}
	f.down = true
	f.until = time.Now().Add(f.retry)
	if f.gauge != nil {
		f.gauge.Set(0)
	}
}

func (f *fallback) ok(ctx context.Context) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		f.log.LogAttrs(ctx, slog.LevelInfo, "shared bandwidth budget available again")
	}
	f.down = false
	if f.gauge != nil {
		f.gauge.Set(1)
	}
}
