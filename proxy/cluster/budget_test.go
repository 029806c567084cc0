package cluster_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"

	"github.com/stowage/stowage/config"
	"github.com/stowage/stowage/proxy/cluster"
	"github.com/stowage/stowage/upstream"
)

// realRedis returns a client of the Redis .ci/run starts, or skips.
func realRedis(t *testing.T) *redis.Client {
	t.Helper()
	rc := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379", MaxRetries: -1})
	t.Cleanup(func() { _ = rc.Close() })
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	if err := rc.Ping(ctx).Err(); err != nil {
		t.Skipf("redis at 127.0.0.1:6379 unreachable: %v", err)
	}
	return rc
}

func prefix(t *testing.T) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return "stowage-test:" + t.Name() + ":" + hex.EncodeToString(b[:]) + ":"
}

// recorder is the real store plus a log of what it answered.
type recorder struct {
	upstream.BudgetStore
	mu     sync.Mutex
	takes  []string // key and "granted" or "denied"
	denied chan struct{}
	once   sync.Once
}

func record(s upstream.BudgetStore) *recorder {
	return &recorder{BudgetStore: s, denied: make(chan struct{})}
}

func (r *recorder) Take(ctx context.Context, key string, rate, burst, n int64) (bool, time.Duration, error) {
	ok, retry, err := r.BudgetStore.Take(ctx, key, rate, burst, n)
	r.mu.Lock()
	defer r.mu.Unlock()
	if err == nil {
		verdict := "granted"
		if !ok {
			verdict = "denied"
			r.once.Do(func() { close(r.denied) })
		}
		r.takes = append(r.takes, key+" "+verdict)
	}
	return ok, retry, err
}

func (r *recorder) log() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.takes...)
}

// blobServer is an upstream whose every blob is size zero bytes.
func blobServer(t *testing.T, size int) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.Contains(r.URL.Path, "/blobs/") {
			_, _ = w.Write(make([]byte, size))
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

func replica(t *testing.T, srv *httptest.Server, limits config.Limits, opts ...upstream.BudgetOption) (*upstream.Client, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	b, err := upstream.NewBudget(config.Link{PrefetchShare: 30}, append(opts, upstream.WithBudgetRegisterer(reg))...)
	if err != nil {
		t.Fatal(err)
	}
	c, err := upstream.New("registry.test", config.Upstream{
		Endpoints: []string{srv.URL}, Proxy: "direct", Internal: true, Limits: limits,
	}, upstream.WithBudget(b))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c, reg
}

// readSome opens a blob and reads n bytes of it.
func readSome(ctx context.Context, c *upstream.Client, n int) error {
	b, err := c.GetBlob(ctx, "library/x", digest.FromString("x"), 0)
	if err != nil {
		return err
	}
	defer b.Body.Close()
	_, err = io.ReadFull(b.Body, make([]byte, n))
	if err == nil {
		err = ctx.Err()
	}
	return err
}

// TestRedisBudgetSharedAcrossReplicas: two replicas share one upstream cap
// through the real Redis. At 1 KB/s a batch is 16 KiB, 16 s of budget: when
// replica A has taken it, replica B must wait, while a replica with its own
// budget (another prefix) is served at once.
func TestRedisBudgetSharedAcrossReplicas(t *testing.T) {
	rc := realRedis(t)
	srv := blobServer(t, 64<<10)
	shared := prefix(t)
	limits := config.Limits{Bandwidth: 1000}
	newStore := func(p string) *recorder {
		s, err := cluster.NewRedisBudget(rc, p)
		if err != nil {
			t.Fatal(err)
		}
		return record(s)
	}
	sa, sb, sc := newStore(shared), newStore(shared), newStore(prefix(t))
	a, _ := replica(t, srv, limits, upstream.WithBudgetStore(sa))
	b, _ := replica(t, srv, limits, upstream.WithBudgetStore(sb))
	c, _ := replica(t, srv, limits, upstream.WithBudgetStore(sc))

	if err := readSome(t.Context(), a, 1024); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- readSome(ctx, b, 1024) }()
	select {
	case <-sb.denied:
	case err := <-done:
		t.Fatalf("replica B read without waiting for the shared budget (err %v); its store said %v", err, sb.log())
	case <-time.After(20 * time.Second):
		t.Fatalf("replica B was never denied; its store said %v", sb.log())
	}
	select {
	case err := <-done:
		t.Fatalf("replica B finished (%v) while the shared budget was spent", err)
	default:
	}
	cancel()
	<-done

	if err := readSome(t.Context(), c, 1024); err != nil {
		t.Fatal(err)
	}
	if log := sc.log(); len(log) != 1 || !strings.HasSuffix(log[0], "granted") {
		t.Errorf("replica with its own budget: store said %v, want one grant", log)
	}
	t.Logf("A: %v; B: %v", sa.log(), sb.log())
}

// TestRedisBudgetPrefetchShareAcrossReplicas: while replica A's client
// pulls, replica B's prefetch draws also on the cluster's prefetch share.
func TestRedisBudgetPrefetchShareAcrossReplicas(t *testing.T) {
	rc := realRedis(t)
	srv := blobServer(t, 256<<10)
	shared := prefix(t)
	limits := config.Limits{Bandwidth: 1 << 20} // batches of 100 KiB
	sa, _ := cluster.NewRedisBudget(rc, shared)
	s, _ := cluster.NewRedisBudget(rc, shared)
	sb := record(s)
	a, _ := replica(t, srv, limits, upstream.WithBudgetStore(sa))
	b, _ := replica(t, srv, limits, upstream.WithBudgetStore(sb))
	prefetch := upstream.WithClass(t.Context(), upstream.ClassPrefetch)

	// No client anywhere: prefetch takes from the budget alone.
	if err := readSome(prefetch, b, 1024); err != nil {
		t.Fatal(err)
	}
	if got := sb.log(); len(got) != 1 || got[0] != "upstream:registry.test granted" {
		t.Fatalf("idle cluster, prefetch takes: %v", got)
	}
	// A client pulls on replica A; B's next prefetch batch also comes out
	// of the cluster's prefetch share.
	if err := readSome(t.Context(), a, 1024); err != nil {
		t.Fatal(err)
	}
	if err := readSome(prefetch, b, 200<<10); err != nil {
		t.Fatal(err)
	}
	got := sb.log()
	if len(got) < 3 || got[1] != "upstream:registry.test:prefetch granted" {
		t.Errorf("prefetch takes while A's client is busy: %v, want the prefetch share first", got)
	}
	t.Logf("B's takes: %v", got)
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestRedisBudgetFallsBackWhenRedisFails: with Redis unreachable the
// replica keeps serving under its own limits and says so.
func TestRedisBudgetFallsBackWhenRedisFails(t *testing.T) {
	dead := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1, DialTimeout: time.Second})
	t.Cleanup(func() { _ = dead.Close() })
	store, err := cluster.NewRedisBudget(dead, prefix(t))
	if err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	srv := blobServer(t, 64<<10)
	c, reg := replica(t, srv, config.Limits{Bandwidth: 10 << 20}, upstream.WithBudgetStore(store), upstream.WithBudgetLogger(log))
	if err := readSome(t.Context(), c, 64<<10); err != nil {
		t.Fatalf("read with Redis down: %v", err)
	}
	if !strings.Contains(logs.String(), "shared bandwidth budget unavailable, using this process's own limits") {
		t.Errorf("no fallback log line; logs: %s", logs.String())
	}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP stowage_budget_shared 1 while the bandwidth budgets are shared through Redis; 0 without Redis, or while this process falls back to its own limits because Redis fails.
# TYPE stowage_budget_shared gauge
stowage_budget_shared 0
`), "stowage_budget_shared"); err != nil {
		t.Error(err)
	}
}
