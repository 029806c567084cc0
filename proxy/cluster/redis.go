// Package cluster coordinates Stowage replicas that share one storage
// backend: Redis leases make one replica download each blob while the
// others wait for its commit.
package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// renewScript extends a lease only while this owner holds it.
var renewScript = redis.NewScript(`if redis.call("get", KEYS[1]) == ARGV[1] then return redis.call("pexpire", KEYS[1], ARGV[2]) else return 0 end`)

// releaseScript deletes a lease only while this owner holds it.
var releaseScript = redis.NewScript(`if redis.call("get", KEYS[1]) == ARGV[1] then return redis.call("del", KEYS[1]) else return 0 end`)

// RedisLeases implements proxy.Coordinator with Redis keys set with NX and
// a TTL, renewed while the holder works: a crashed holder's lease expires
// by itself and another replica takes over.
type RedisLeases struct {
	c      redis.UniversalClient
	prefix string
	owner  string
	ttl    time.Duration
}

// NewRedisLeases returns leases under prefix with the given TTL (renewed
// every TTL/3 while held).
func NewRedisLeases(c redis.UniversalClient, prefix string, ttl time.Duration) (*RedisLeases, error) {
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
	return &RedisLeases{c: c, prefix: prefix, owner: hex.EncodeToString(id[:]), ttl: ttl}, nil
}

// TryAcquire takes the lease for key if nobody holds it.
func (l *RedisLeases) TryAcquire(ctx context.Context, key string) (func(), bool, error) {
	k := l.prefix + key
	ok, err := l.c.SetNX(ctx, k, l.owner, l.ttl).Result()
	if err != nil || !ok {
		return nil, false, err
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(l.ttl / 3)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				// A failed renewal is retried at the next tick; if the
				// lease expires meanwhile another replica may start a
				// second, equally correct download.
				_ = renewScript.Run(context.WithoutCancel(ctx), l.c, []string{k}, l.owner, l.ttl.Milliseconds()).Err()
			}
		}
	})
	var once sync.Once
	release := func() {
		once.Do(func() {
			close(stop)
			wg.Wait()
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			_ = releaseScript.Run(rctx, l.c, []string{k}, l.owner).Err()
		})
	}
	return release, true, nil
}

// Held reports whether anyone holds key.
func (l *RedisLeases) Held(ctx context.Context, key string) (bool, error) {
	n, err := l.c.Exists(ctx, l.prefix+key).Result()
	return n > 0, err
}
