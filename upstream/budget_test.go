package upstream

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/stowage/stowage/config"
)

// zeros is an endless body of zero bytes (the upstream side of the budget
// tests; what is under test is the pacing of its reads).
type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }
func (zeros) Close() error               { return nil }

type limitedBody struct{ io.Reader }

func (limitedBody) Close() error { return nil }

func body(n int64) io.ReadCloser { return limitedBody{io.LimitReader(zeros{}, n)} }

func viaProxy(raw string) proxyFunc {
	if raw == "" {
		return func(*http.Request) (*url.URL, error) { return nil, nil }
	}
	u, err := url.Parse(raw)
	if err != nil {
		panic(err)
	}
	return func(*http.Request) (*url.URL, error) { return u, nil }
}

func newTestBudget(t testing.TB, link config.Link, opts ...BudgetOption) (*Budget, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	b, err := NewBudget(link, append([]BudgetOption{WithBudgetRegisterer(reg)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return b, reg
}

// open takes a connection slot and wraps rc as the client does.
func open(t *testing.T, ctx context.Context, l *limits, rc io.ReadCloser) io.ReadCloser {
	t.Helper()
	release, err := l.acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+l.host+"/v2/x/blobs/y", nil)
	return l.wrap(ctx, &http.Response{Body: rc, Request: req}, release)
}

// readAll reads rc to the end and returns the virtual time it took.
func readAll(t *testing.T, rc io.ReadCloser) (int64, time.Duration) {
	t.Helper()
	start := time.Now()
	n, err := io.Copy(io.Discard, rc)
	if err != nil {
		t.Fatal(err)
	}
	if err := rc.Close(); err != nil {
		t.Fatal(err)
	}
	return n, time.Since(start)
}

func near(got, want, tol time.Duration) bool { return got >= want-tol && got <= want+tol }

func TestBudgetUpstreamBandwidthCap(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b, reg := newTestBudget(t, config.Link{PrefetchShare: 30})
		capped := newLimits("a.test", config.Limits{Bandwidth: 1_000_000}, b, viaProxy(""))
		n, took := readAll(t, open(t, t.Context(), capped, body(4_000_000)))
		// The first chunk (1/16 s of traffic) is the bucket's burst.
		want := time.Duration(float64(n-62_500) / 1e6 * float64(time.Second))
		if n != 4_000_000 || !near(took, want, 10*time.Millisecond) {
			t.Errorf("read %d bytes in %v at 1MB/s, want %v", n, took, want)
		}
		t.Logf("4 MB at a 1 MB/s cap: %v of virtual time", took)

		free := newLimits("b.test", config.Limits{}, b, viaProxy(""))
		if _, took := readAll(t, open(t, t.Context(), free, body(4_000_000))); took != 0 {
			t.Errorf("uncapped upstream waited %v", took)
		}
		if got := testutil.ToFloat64(b.m.bytes.WithLabelValues("a.test", "direct", "client")); got != 4e6 {
			t.Errorf("client bytes of a.test = %v, want 4e6", got)
		}
		if got := testutil.CollectAndCount(reg, "stowage_budget_wait_seconds"); got != 1 {
			t.Errorf("wait histogram series = %d, want 1", got)
		}
	})
}

func TestBudgetLinkSharedByUpstreamsOfOneProxy(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b, _ := newTestBudget(t, config.Link{Bandwidth: 1_000_000, PrefetchShare: 30})
		corp := viaProxy("http://user:secret@proxy.corp:3128")
		a := newLimits("a.test", config.Limits{}, b, corp)
		c := newLimits("c.test", config.Limits{}, b, corp)
		other := newLimits("o.test", config.Limits{}, b, viaProxy("http://other.corp:8080"))
		direct := newLimits("d.test", config.Limits{}, b, viaProxy(""))

		var wg sync.WaitGroup
		took := make([]time.Duration, 3)
		for i, l := range []*limits{a, c, other} {
			wg.Go(func() { _, took[i] = readAll(t, open(t, t.Context(), l, body(1_000_000))) })
		}
		wg.Wait()
		// a and c share proxy.corp: 2 MB at 1 MB/s; other.corp is its own link.
		if !near(max(took[0], took[1]), 2*time.Second-62500*time.Microsecond, 20*time.Millisecond) {
			t.Errorf("two upstreams through one proxy took %v and %v, want about 2s together", took[0], took[1])
		}
		if !near(took[2], time.Second-62500*time.Microsecond, 20*time.Millisecond) {
			t.Errorf("upstream through another proxy took %v, want about 1s", took[2])
		}
		if _, d := readAll(t, open(t, t.Context(), direct, body(1_000_000))); d != 0 {
			t.Errorf("direct traffic waited %v with link.direct false", d)
		}
		if _, ok := b.buckets["link:proxy.corp:3128"]; !ok {
			t.Errorf("budgets %v: want link:proxy.corp:3128 (no credentials)", keys(b))
		}

		bd, _ := newTestBudget(t, config.Link{Bandwidth: 1_000_000, Direct: true})
		d2 := newLimits("d.test", config.Limits{}, bd, viaProxy(""))
		if _, d := readAll(t, open(t, t.Context(), d2, body(1_000_000))); d == 0 {
			t.Error("direct traffic not paced with link.direct true")
		}
	})
}

func keys(b *Budget) []string {
	var out []string
	for k := range b.buckets {
		out = append(out, k)
	}
	return out
}

// pump reads rc until ctx ends, counting bytes.
func pump(ctx context.Context, rc io.ReadCloser, n *atomic.Int64) {
	buf := make([]byte, 32<<10)
	for ctx.Err() == nil {
		k, err := rc.Read(buf)
		n.Add(int64(k))
		if err != nil {
			break
		}
	}
	_ = rc.Close()
}

func TestBudgetPrefetchYieldsToClients(t *testing.T) {
	for _, share := range []config.Percent{30, 0} {
		t.Run(share.String(), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				const rate = 1_000_000.0
				b, _ := newTestBudget(t, config.Link{Bandwidth: rate, PrefetchShare: share})
				l := newLimits("a.test", config.Limits{}, b, viaProxy("http://proxy.corp:3128"))
				ctx, stop := context.WithCancel(t.Context())
				var pre atomic.Int64
				var wg sync.WaitGroup
				pctx := WithClass(ctx, ClassPrefetch)
				wg.Go(func() { pump(pctx, open(t, pctx, l, zeros{}), &pre) })

				time.Sleep(2 * time.Second)
				if got := float64(pre.Load()) / 2; got < 0.95*rate {
					t.Errorf("prefetch alone got %.0f B/s, want the whole link (%v B/s)", got, rate)
				}

				before := pre.Load()
				n, took := readAll(t, open(t, t.Context(), l, body(3_000_000)))
				during := pre.Load() - before
				clientRate := float64(n) / took.Seconds()
				preRate := float64(during) / took.Seconds()
				t.Logf("share %v: client %.0f B/s, prefetch %.0f B/s while the client pulled", share, clientRate, preRate)
				if clientRate < (1-share.Fraction())*rate*0.99 {
					t.Errorf("client got %.0f B/s, want at least %.0f", clientRate, (1-share.Fraction())*rate)
				}
				if during > int64(share.Fraction()*rate*took.Seconds())+2*62_500 {
					t.Errorf("prefetch took %d bytes in %v while a client waited, over its %v share", during, took, share)
				}

				// Clients idle: prefetch takes the whole link back.
				time.Sleep(200 * time.Millisecond)
				before = pre.Load()
				time.Sleep(2 * time.Second)
				if got := float64(pre.Load()-before) / 2; got < 0.95*rate {
					t.Errorf("prefetch after the client got %.0f B/s, want the whole link", got)
				}
				stop()
				wg.Wait()
			})
		})
	}
}

func TestBudgetClassChangesWhileReading(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b, _ := newTestBudget(t, config.Link{Bandwidth: 1_000_000, PrefetchShare: 0})
		l := newLimits("a.test", config.Limits{}, b, viaProxy("http://proxy.corp:3128"))
		ctx, stop := context.WithCancel(t.Context())
		defer stop()

		// A client holds the link; a prefetch fill is held back (share 0%).
		client := open(t, ctx, l, zeros{})
		var cls atomic.Uint32
		cls.Store(uint32(ClassPrefetch))
		fctx := WithClassFunc(ctx, func() Class { return Class(cls.Load()) })
		var fill atomic.Int64
		var wg sync.WaitGroup
		wg.Go(func() { pump(fctx, open(t, fctx, l, zeros{}), &fill) })
		time.Sleep(2 * time.Second)
		held := fill.Load()
		if held > 2*62_500 {
			t.Errorf("prefetch fill read %d bytes while a client waited at share 0%%", held)
		}

		// A client joins the fill: it becomes client traffic and moves.
		cls.Store(uint32(ClassClient))
		time.Sleep(2 * time.Second)
		if moved := fill.Load() - held; moved < 1_000_000 {
			t.Errorf("joined fill read %d bytes in 2s, want the link (2 MB/s less the first chunk)", moved)
		}
		if got := testutil.ToFloat64(b.m.bytes.WithLabelValues("a.test", "proxy.corp:3128", "client")); got < 1_000_000 {
			t.Errorf("client bytes = %v after the class change", got)
		}
		stop()
		wg.Wait()
		_ = client.Close()
	})
}

func TestBudgetConnectionsCap(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b, _ := newTestBudget(t, config.Link{})
		l := newLimits("a.test", config.Limits{Connections: 2}, b, viaProxy(""))
		one, two := open(t, t.Context(), l, body(1)), open(t, t.Context(), l, body(1))
		var third atomic.Bool
		go func() {
			rc := open(t, t.Context(), l, body(1))
			third.Store(true)
			_ = rc.Close()
		}()
		synctest.Wait()
		if third.Load() {
			t.Fatal("a third request started while two held the 2 connections")
		}
		if got := testutil.ToFloat64(l.inUse); got != 2 {
			t.Errorf("connections in use = %v, want 2", got)
		}
		_ = one.Close()
		_ = one.Close() // a second Close releases nothing more
		synctest.Wait()
		if !third.Load() {
			t.Fatal("the third request did not start when a slot was freed")
		}
		_ = two.Close()
		if got := testutil.ToFloat64(l.inUse); got != 0 {
			t.Errorf("connections in use = %v after every body closed, want 0", got)
		}
	})
}

func TestBudgetConnectionsKeepASlotForClients(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b, _ := newTestBudget(t, config.Link{})
		l := newLimits("a.test", config.Limits{Connections: 3}, b, viaProxy(""))
		pctx := WithClass(t.Context(), ClassPrefetch)
		p1, p2 := open(t, pctx, l, body(1)), open(t, pctx, l, body(1))
		var p3, c1 atomic.Bool
		go func() {
			rc := open(t, pctx, l, body(1))
			p3.Store(true)
			_ = rc.Close()
		}()
		synctest.Wait()
		if p3.Load() {
			t.Fatal("prefetch took the last of 3 connection slots")
		}
		go func() {
			rc := open(t, t.Context(), l, body(1))
			c1.Store(true)
			_ = rc.Close()
		}()
		synctest.Wait()
		if !c1.Load() {
			t.Fatal("a client queued behind prefetch although a slot was free")
		}
		if p3.Load() {
			t.Fatal("prefetch took the slot kept for clients")
		}
		_ = p1.Close()
		synctest.Wait()
		if !p3.Load() {
			t.Fatal("prefetch did not get a slot when another prefetch finished")
		}
		_ = p2.Close()
		if got := testutil.ToFloat64(l.inUse); got != 0 {
			t.Errorf("connections in use = %v at the end", got)
		}
	})
}

func TestBudgetClientCountsFromRequestStart(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b, _ := newTestBudget(t, config.Link{Bandwidth: 1_000_000, PrefetchShare: 30})
		l := newLimits("a.test", config.Limits{Bandwidth: 2_000_000}, b, viaProxy("http://proxy.corp:3128"))
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, "https://a.test/v2/x/blobs/y", nil)
		link := b.linkBucket("proxy.corp:3128")

		if done := l.early(WithClass(t.Context(), ClassPrefetch), req); link.clients != 0 {
			t.Error("a prefetch request counted as a waiting client")
		} else {
			done()
		}
		done := l.early(t.Context(), req)
		if busy, _ := link.busy(); !busy || l.up.clients != 1 {
			t.Error("a client request waiting for its headers does not hold prefetch back")
		}
		done()
		if busy, _ := link.busy(); busy || l.up.clients != 0 {
			t.Error("the early count outlived the request")
		}
	})
}
