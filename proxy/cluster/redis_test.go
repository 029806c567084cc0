package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net"
	"os"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"

	"github.com/stowage/stowage/proxy/internal/testenv"
)

const realRedis = "127.0.0.1:6379"

// needRedis returns a client of the real Redis on 127.0.0.1:6379 (started
// by .ci/install.sh); outside CI a missing Redis skips the test.
func needRedis(t *testing.T) *redis.Client {
	t.Helper()
	c := NewRedisClient(realRedis, "", 0, 2*time.Second)
	t.Cleanup(func() { _ = c.Close() })
	if err := c.Ping(t.Context()).Err(); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("redis on %s: %v", realRedis, err)
		}
		t.Skipf("redis on %s: %v", realRedis, err)
	}
	return c
}

// closedAddr returns a loopback address nothing listens on any more.
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}

// refusingRedis returns a client of a Redis that refuses connections
// (a closed loopback port), closed when the test ends.
func refusingRedis(t *testing.T, timeout time.Duration) *redis.Client {
	t.Helper()
	c := NewRedisClient(closedAddr(t), "", 0, timeout)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func testPrefix(t *testing.T) string {
	var id [8]byte
	_, _ = rand.Read(id[:])
	return "stowage-test-" + hex.EncodeToString(id[:]) + ":"
}

func newLeases(t *testing.T, c redis.UniversalClient, prefix string, ttl time.Duration, opts ...Option) *RedisLeases {
	t.Helper()
	l, err := NewRedisLeases(c, prefix, ttl, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func TestRedisLeasesExclusiveAndRelease(t *testing.T) {
	c := needRedis(t)
	ctx := t.Context()
	prefix := testPrefix(t)
	a, b := newLeases(t, c, prefix, 5*time.Second), newLeases(t, c, prefix, 5*time.Second)

	relA, ok, err := a.TryAcquire(ctx, "k")
	if err != nil || !ok {
		t.Fatalf("a: acquired %v, %v", ok, err)
	}
	if _, ok, err := b.TryAcquire(ctx, "k"); err != nil || ok {
		t.Fatalf("b acquired a held lease: %v, %v", ok, err)
	}
	if held, err := b.Held(ctx, "k"); err != nil || !held {
		t.Fatalf("held = %v, %v; want true", held, err)
	}
	relA()
	relA() // idempotent
	if held, err := b.Held(ctx, "k"); err != nil || held {
		t.Fatalf("held after release = %v, %v", held, err)
	}
	relB, ok, err := b.TryAcquire(ctx, "k")
	if err != nil || !ok {
		t.Fatalf("b after release: %v, %v", ok, err)
	}
	relB()
}

// TestRedisLeasesReleaseIsOwnerOnly: a lease that expired and was taken by
// another replica is not deleted by the first owner's late release.
func TestRedisLeasesReleaseIsOwnerOnly(t *testing.T) {
	c := needRedis(t)
	ctx := t.Context()
	prefix := testPrefix(t)
	a, b := newLeases(t, c, prefix, 5*time.Second), newLeases(t, c, prefix, 5*time.Second)
	relA, ok, err := a.TryAcquire(ctx, "k")
	if err != nil || !ok {
		t.Fatalf("a: %v, %v", ok, err)
	}
	// The lease expires (as after a partition longer than the TTL).
	if err := c.Del(ctx, prefix+"k").Err(); err != nil {
		t.Fatal(err)
	}
	relB, ok, err := b.TryAcquire(ctx, "k")
	if err != nil || !ok {
		t.Fatalf("b after expiry: %v, %v", ok, err)
	}
	defer relB()
	relA()
	if v, err := c.Get(ctx, prefix+"k").Result(); err != nil || v != b.owner {
		t.Fatalf("after a's release the key is %q, %v; want b's owner %q", v, err, b.owner)
	}
}

// TestRedisLeasesRenewal: a held lease outlives its TTL because it is
// renewed; observed as its remaining time going up again.
func TestRedisLeasesRenewal(t *testing.T) {
	c := needRedis(t)
	ctx := t.Context()
	prefix := testPrefix(t)
	l := newLeases(t, c, prefix, 600*time.Millisecond)
	rel, ok, err := l.TryAcquire(ctx, "k")
	if err != nil || !ok {
		t.Fatalf("%v, %v", ok, err)
	}
	defer rel()
	first, err := c.PTTL(ctx, prefix+"k").Result()
	if err != nil || first <= 0 {
		t.Fatalf("pttl %v %v", first, err)
	}
	low := first
	renewed := false
	for range 100 { // at most ~5 s; a renewal comes every 200 ms
		time.Sleep(50 * time.Millisecond)
		p, err := c.PTTL(ctx, prefix+"k").Result()
		if err != nil || p <= 0 {
			t.Fatalf("lease gone while held: pttl %v %v", p, err)
		}
		if p > low {
			renewed = true
			break
		}
		low = p
	}
	if !renewed {
		t.Fatal("the lease's TTL never went up: no renewal")
	}
}

// TestRedisLeasesExpiry: the lease of a replica that died (never released,
// never renewed) expires, and another replica takes it.
func TestRedisLeasesExpiry(t *testing.T) {
	c := needRedis(t)
	ctx := t.Context()
	prefix := testPrefix(t)
	if err := c.SetNX(ctx, prefix+"k", "dead-owner", 300*time.Millisecond).Err(); err != nil {
		t.Fatal(err)
	}
	l := newLeases(t, c, prefix, 5*time.Second)
	if _, ok, err := l.TryAcquire(ctx, "k"); err != nil || ok {
		t.Fatalf("acquired a live lease: %v, %v", ok, err)
	}
	for range 100 { // at most ~5 s
		time.Sleep(50 * time.Millisecond)
		rel, ok, err := l.TryAcquire(ctx, "k")
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			rel()
			return
		}
	}
	t.Fatal("the dead owner's lease never expired")
}

func TestNewRedisLeasesErrors(t *testing.T) {
	if _, err := NewRedisLeases(nil, "p:", time.Second); err == nil {
		t.Error("nil client accepted")
	}
	c := redis.NewClient(&redis.Options{Addr: realRedis})
	defer c.Close()
	if _, err := NewRedisLeases(c, "p:", time.Millisecond); err == nil {
		t.Error("1ms TTL accepted")
	}
	reg := prometheus.NewRegistry()
	if _, err := NewRedisLeases(c, "p:", time.Second, WithMetrics(reg)); err != nil {
		t.Fatal(err)
	}
	if _, err := NewRedisLeases(c, "p:", time.Second, WithMetrics(reg)); err == nil {
		t.Error("metrics registered twice without an error")
	}
}

// TestRedisLeasesHangingRedis: a Redis that accepts connections and never
// answers. The first coordinator call returns after one timeout with the
// lease taken locally, the breaker opens, and every further call within
// the backoff window is answered without touching Redis. After the window,
// exactly one call probes it again.
func TestRedisLeasesHangingRedis(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := &hangingRedis{}
		c := h.client(t, 300*time.Millisecond)
		reg := prometheus.NewRegistry()
		l := newLeases(t, c, "p:", 30*time.Second, WithTimeout(300*time.Millisecond),
			WithBackoff(5*time.Second), WithMetrics(reg))
		ctx := context.Background()

		start := time.Now()
		rel, ok, err := l.TryAcquire(ctx, "fill:a")
		if err != nil || !ok {
			t.Fatalf("TryAcquire on a hanging Redis: %v, %v; want a local lease", ok, err)
		}
		if d := time.Since(start); d > 300*time.Millisecond {
			t.Errorf("TryAcquire took %v (synthetic time), want at most the 300ms timeout", d)
		}
		rel() // a local lease: nothing to release in Redis
		if !l.Unavailable() {
			t.Fatal("breaker not open after a timeout")
		}
		if n := h.dials.Load(); n != 1 {
			t.Errorf("dials = %d, want 1", n)
		}
		if h.read.Load() == 0 {
			t.Error("the hanging Redis received nothing: the call never reached it")
		}

		// Within the window: 20 calls, none reaches Redis.
		for i := range 10 {
			if _, ok, err := l.TryAcquire(ctx, "fill:b"); err != nil || !ok {
				t.Fatalf("call %d: %v, %v", i, ok, err)
			}
			if held, err := l.Held(ctx, "fill:b"); err != nil || held {
				t.Fatalf("Held during the window: %v, %v", held, err)
			}
		}
		if n := h.dials.Load(); n != 1 {
			t.Errorf("dials during the window = %d, want still 1", n)
		}
		if got := testutil.ToFloat64(l.m.local); got != 20 {
			t.Errorf("local decisions = %v, want 20", got)
		}

		// After the window one call probes (a new connection: the timed
		// out one was discarded), fails, and reopens the window.
		time.Sleep(5 * time.Second)
		if _, ok, err := l.TryAcquire(ctx, "fill:c"); err != nil || !ok {
			t.Fatalf("probe: %v, %v", ok, err)
		}
		if n := h.dials.Load(); n != 2 {
			t.Errorf("dials after the window = %d, want 2", n)
		}
		if _, ok, _ := l.TryAcquire(ctx, "fill:c"); !ok {
			t.Fatal("second call after a failed probe not local")
		}
		if n := h.dials.Load(); n != 2 {
			t.Errorf("dials after a failed probe = %d, want still 2", n)
		}
		if got := testutil.ToFloat64(l.m.trips); got != 1 {
			t.Errorf("breaker trips = %v, want 1 (one episode)", got)
		}
		if got := testutil.ToFloat64(l.m.errors); got != 2 {
			t.Errorf("redis errors = %v, want 2", got)
		}
		if got := testutil.ToFloat64(l.m.open); got != 1 {
			t.Errorf("unavailable gauge = %v, want 1", got)
		}
	})
}

// TestRedisLeasesHangAfterAcquire: Redis stops answering while a lease is
// held. The release (run before the fill's clients get their last byte)
// returns after at most one timeout and opens the breaker; the renewal
// goroutine ends with it.
func TestRedisLeasesHangAfterAcquire(t *testing.T) {
	needRedis(t)
	p := testenv.NewFreezableTCP(t, realRedis)
	c := NewRedisClient(p.Addr(), "", 0, 300*time.Millisecond)
	defer c.Close()
	prefix := testPrefix(t)
	l := newLeases(t, c, prefix, 30*time.Second, WithTimeout(300*time.Millisecond), WithBackoff(time.Minute))
	ctx := t.Context()
	rel, ok, err := l.TryAcquire(ctx, "k")
	if err != nil || !ok || l.Unavailable() {
		t.Fatalf("acquire through the proxy: %v, %v", ok, err)
	}
	p.Freeze()
	done := make(chan struct{})
	go func() { rel(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second): // a hang, not a timing assertion
		t.Fatal("release hangs on a Redis that does not answer")
	}
	if !l.Unavailable() {
		t.Error("breaker not open after the release timed out")
	}
	if got := testutil.ToFloat64(l.m.errors); got != 1 {
		t.Errorf("redis errors = %v, want 1", got)
	}
	// The lease is still in Redis (its release never arrived); it expires
	// by its TTL. Clean up directly.
	_ = needRedis(t).Del(context.Background(), prefix+"k").Err()
}

// TestRedisLeasesRefusedThenBack: Redis refuses connections (down), then
// comes back. Fills are coordinated locally meanwhile, logged once, and
// cluster coordination resumes with the first probe after the window.
func TestRedisLeasesRefusedThenBack(t *testing.T) {
	needRedis(t)
	closed := closedAddr(t)

	var down atomic.Bool
	down.Store(true)
	var dials atomic.Int32
	opt := clientOptions(realRedis, "", 0, time.Second)
	opt.Dialer = func(ctx context.Context, network, _ string) (net.Conn, error) {
		dials.Add(1)
		addr := realRedis
		if down.Load() {
			addr = closed
		}
		return (&net.Dialer{}).DialContext(ctx, network, addr)
	}
	c := redis.NewClient(opt)
	defer c.Close()
	prefix := testPrefix(t)
	logs := &countingHandler{}
	l := newLeases(t, c, prefix, 5*time.Second, WithBackoff(time.Millisecond), WithLogger(slogNew(logs)))
	other := newLeases(t, needRedis(t), prefix, 5*time.Second)
	ctx := t.Context()

	// Another replica holds the lease; with Redis down this one cannot
	// see it and downloads on its own (correct, not deduplicated).
	relO, ok, err := other.TryAcquire(ctx, "k")
	if err != nil || !ok {
		t.Fatal(err)
	}
	defer relO()
	for i := range 3 {
		if i > 0 {
			time.Sleep(2 * time.Millisecond) // past the 1ms window: a probe
		}
		rel, ok, err := l.TryAcquire(ctx, "k")
		if err != nil || !ok {
			t.Fatalf("TryAcquire with Redis down: %v, %v; want a local lease", ok, err)
		}
		rel()
	}
	if !l.Unavailable() || dials.Load() < 3 {
		t.Fatalf("unavailable=%v dials=%d", l.Unavailable(), dials.Load())
	}
	if n := logs.warns.Load(); n != 1 {
		t.Errorf("%d warnings for one episode, want 1", n)
	}

	down.Store(false)
	time.Sleep(2 * time.Millisecond)
	if _, ok, err := l.TryAcquire(ctx, "k"); err != nil || ok {
		t.Fatalf("Redis is back and the other replica holds the lease, yet acquired=%v err=%v", ok, err)
	}
	if l.Unavailable() {
		t.Error("breaker still open after a successful call")
	}
	if n := logs.infos.Load(); n != 1 {
		t.Errorf("%d recovery logs, want 1", n)
	}
	if got := testutil.ToFloat64(l.m.trips); got != 1 {
		t.Errorf("trips = %v, want 1", got)
	}
}

// TestRedisLeasesCallerCancelIsNotAFailure: a caller whose context ends
// gets its context's error, and Redis is not marked down for it.
func TestRedisLeasesCallerCancelIsNotAFailure(t *testing.T) {
	c := needRedis(t)
	l := newLeases(t, c, testPrefix(t), 5*time.Second)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, _, err := l.TryAcquire(ctx, "k"); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if l.Unavailable() {
		t.Error("a cancelled caller opened the breaker")
	}
}
