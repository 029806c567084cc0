package cluster

import (
	"context"
	"errors"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/redis/go-redis/v9"

	"github.com/stowage/stowage/upstream"
)

// RedisBudget implements upstream.BudgetStore: every replica takes its
// bandwidth in batches from GCRA buckets in Redis (github.com/go-redis/
// redis_rate), so the caps hold for the cluster.
type RedisBudget struct {
	c      redis.UniversalClient
	lim    *redis_rate.Limiter
	prefix string
}

var _ upstream.BudgetStore = (*RedisBudget)(nil)

// NewRedisBudget returns the store with its keys under prefix.
func NewRedisBudget(c redis.UniversalClient, prefix string) (*RedisBudget, error) {
	if c == nil {
		return nil, errors.New("cluster: nil redis client")
	}
	return &RedisBudget{c: c, lim: redis_rate.NewLimiter(c), prefix: prefix + "budget:"}, nil
}

// Take grants n bytes of key (rate bytes per second, at most burst at once)
// or says when to ask again.
func (b *RedisBudget) Take(ctx context.Context, key string, rate, burst, n int64) (bool, time.Duration, error) {
	if rate < 1 || burst < n {
		return false, 0, errors.New("cluster: budget rate must be positive and burst at least n")
	}
	res, err := b.lim.AllowN(ctx, b.prefix+key, redis_rate.Limit{Rate: int(rate), Burst: int(burst), Period: time.Second}, int(n))
	if err != nil {
		return false, 0, err
	}
	if res.Allowed > 0 {
		return true, 0, nil
	}
	return false, max(res.RetryAfter, time.Millisecond), nil
}

// MarkBusy sets key's busy mark for ttl.
func (b *RedisBudget) MarkBusy(ctx context.Context, key string, ttl time.Duration) error {
	return b.c.Set(ctx, b.prefix+key+":busy", 1, ttl).Err()
}

// Busy reports whether key's busy mark is set.
func (b *RedisBudget) Busy(ctx context.Context, key string) (bool, error) {
	n, err := b.c.Exists(ctx, b.prefix+key+":busy").Result()
	return n > 0, err
}
