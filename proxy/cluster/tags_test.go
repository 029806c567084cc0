package cluster

import (
	"context"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/stowage/stowage/proxy/internal/testenv"
)

func newTags(t *testing.T, l *RedisLeases) *RedisTags {
	t.Helper()
	tg, err := NewRedisTags(l)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tg.Close() })
	return tg
}

// TestRedisTagsShareAndPublish: a confirmation recorded by one replica is
// read by another; a retag reaches the other replicas' watchers (not the
// publisher's own), and namespaces keep caches apart.
func TestRedisTagsShareAndPublish(t *testing.T) {
	c := needRedis(t)
	prefix := testPrefix(t)
	a := newTags(t, newLeases(t, c, prefix, time.Second))
	b := newTags(t, newLeases(t, c, prefix, time.Second))
	other := newTags(t, newLeases(t, c, testPrefix(t), time.Second))
	ctx := t.Context()

	if _, _, ok := b.Fetched(ctx, "r", "v1"); ok {
		t.Fatal("Fetched of an unknown tag: ok")
	}
	at := time.Unix(1700000000, 123)
	a.Confirmed(ctx, "r", "v1", "sha256:aa", at, false)
	if d, got, ok := b.Fetched(ctx, "r", "v1"); !ok || d != "sha256:aa" || !got.Equal(at) {
		t.Fatalf("Fetched = %s %v %v; want sha256:aa %v", d, got, ok, at)
	}
	if _, _, ok := other.Fetched(ctx, "r", "v1"); ok {
		t.Error("another namespace sees the record")
	}

	var mu sync.Mutex
	seen := map[string][]string{}
	watch := func(name string) func(repo, tag string) {
		return func(repo, tag string) {
			mu.Lock()
			defer mu.Unlock()
			seen[name] = append(seen[name], repo+":"+tag)
		}
	}
	for name, tg := range map[string]*RedisTags{"a": a, "b": b, "other": other} {
		tg.Watch(watch(name))
	}
	deadline := time.Now().Add(5 * time.Second)
	for (!a.Subscribed() || !b.Subscribed() || !other.Subscribed()) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	a.Confirmed(ctx, "r", "v1", "sha256:bb", at.Add(time.Minute), true)
	for time.Now().Before(deadline) {
		mu.Lock()
		n := len(seen["b"])
		mu.Unlock()
		if n > 0 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	b.Confirmed(ctx, "sync", "end", "sha256:cc", at, true) // a marker after a's message
	for time.Now().Before(deadline) {
		mu.Lock()
		n := len(seen["a"])
		mu.Unlock()
		if n > 0 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	if got := seen["b"]; len(got) != 1 || got[0] != "r:v1" {
		t.Errorf("b saw %v, want [r:v1]", got)
	}
	if got := seen["a"]; len(got) != 1 || got[0] != "sync:end" {
		t.Errorf("a saw %v, want only b's [sync:end] (not its own retag)", got)
	}
	if got := seen["other"]; len(got) != 0 {
		t.Errorf("another namespace saw %v", got)
	}
	if d, _, _ := b.Fetched(ctx, "r", "v1"); d != "sha256:bb" {
		t.Errorf("after the retag Fetched = %s, want sha256:bb", d)
	}
}

// TestRedisTagsHangingRedis: on a Redis that never answers, Fetched and
// Confirmed cost at most one timeout per breaker window, and Close ends
// the subscriber at once.
func TestRedisTagsHangingRedis(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := &hangingRedis{}
		c := h.client(t, 300*time.Millisecond)
		l := newLeases(t, c, "p:", 30*time.Second, WithTimeout(300*time.Millisecond), WithBackoff(5*time.Second))
		tg, err := NewRedisTags(l)
		if err != nil {
			t.Fatal(err)
		}
		tg.Watch(func(string, string) { t.Error("a message from a hanging Redis") })
		ctx := context.Background()
		start := time.Now()
		if _, _, ok := tg.Fetched(ctx, "r", "v1"); ok {
			t.Error("Fetched on a hanging Redis: ok")
		}
		for range 10 {
			tg.Confirmed(ctx, "r", "v1", "sha256:aa", time.Now(), true)
			_, _, _ = tg.Fetched(ctx, "r", "v1")
		}
		if d := time.Since(start); d > 300*time.Millisecond {
			t.Errorf("21 calls took %v (synthetic time), want one 300ms timeout", d)
		}
		if !l.Unavailable() {
			t.Error("breaker not open")
		}
		time.Sleep(time.Minute) // the subscriber retries meanwhile, bounded
		start = time.Now()
		if err := tg.Close(); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d > time.Second {
			t.Errorf("Close took %v", d)
		}
	})
}

// TestRedisTagsSubscriberSurvivesRestart: the retag subscriber of a
// replica reconnects by itself after its Redis (a real redis-server of the
// test) was killed and started again, and after it hung (SIGSTOP) and
// continued: retags published afterwards reach it.
func TestRedisTagsSubscriberSurvivesRestart(t *testing.T) {
	rs := testenv.StartRedisServer(t)
	client := func() *redis.Client {
		c := NewRedisClient(rs.Addr, "", 0, 200*time.Millisecond)
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
	pub := newTags(t, newLeases(t, client(), "p:", time.Second, WithBackoff(50*time.Millisecond)))
	sub := newTags(t, newLeases(t, client(), "p:", time.Second, WithBackoff(50*time.Millisecond)))
	got := make(chan string, 16)
	sub.Watch(func(repo, tag string) { got <- repo + ":" + tag })
	// deliver publishes until the subscriber reports it (the publisher's
	// breaker may need a probe first), bounded.
	deliver := func(phase, tag string) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for time.Now().Before(deadline) {
			if sub.Subscribed() {
				pub.Confirmed(t.Context(), "r", tag, "sha256:aa", time.Now(), true)
				select {
				case g := <-got:
					if g != "r:"+tag {
						t.Fatalf("%s: got %s", phase, g)
					}
					return
				case <-time.After(100 * time.Millisecond):
				}
				continue
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Fatalf("%s: the retag never reached the subscriber", phase)
	}
	deliver("before", "v1")
	rs.Kill()
	rs.Start()
	deliver("after a restart", "v2")
	rs.Stop()
	time.Sleep(6 * time.Second) // past receiveWait: the subscriber pings, gets no pong
	rs.Cont()
	deliver("after a hang", "v3")
}
