package upstream

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/opencontainers/go-digest"

	"github.com/stowage/stowage/config"
	"github.com/stowage/stowage/upstream/internal/testregistry"
)

// failing serves 503 (with retryAfter, if set) to every request but the
// /v2/ ping and counts them.
func failing(t *testing.T, calls *atomic.Int64, retryAfter string) string {
	t.Helper()
	return serve(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v2/" {
			return
		}
		calls.Add(1)
		if retryAfter != "" {
			w.Header().Set("Retry-After", retryAfter)
		}
		w.WriteHeader(http.StatusServiceUnavailable)
	}).URL
}

func noSleep(context.Context, time.Duration) error { return nil }

// TestAttemptsMeansAttempts: retry.attempts is the number of requests of
// one metadata call, also when several endpoints share it.
func TestAttemptsMeansAttempts(t *testing.T) {
	t.Parallel()
	var a, b atomic.Int64
	one := testConfig(failing(t, &a, ""))
	one.Retry.Attempts = 4
	if _, err := newClient(t, one, WithSleep(noSleep)).GetManifest(t.Context(), "a/b", "v1", nil); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("err = %v", err)
	}
	if a.Load() != 4 {
		t.Fatalf("one endpoint: %d requests, want 4", a.Load())
	}

	a.Store(0)
	two := testConfig(one.Endpoints[0], failing(t, &b, ""))
	two.Retry.Attempts = 4
	if _, err := newClient(t, two, WithSleep(noSleep)).HeadManifest(t.Context(), "a/b", "v1", nil); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("err = %v", err)
	}
	if a.Load()+b.Load() != 4 || b.Load() < 1 {
		t.Fatalf("two endpoints: %d + %d requests, want 4 in all, the second at least 1", a.Load(), b.Load())
	}
}

// TestBlobGetNotRetried: the client sends a blob GET once (per endpoint);
// retrying and resuming blobs is the fill's job. Against a real registry
// whose blob GETs fail with 503.
func TestBlobGetNotRetried(t *testing.T) {
	t.Parallel()
	var blobGets, manifestGets atomic.Int64
	reg := testregistry.Start(t, testregistry.WithHandler(func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			switch {
			case strings.Contains(r.URL.Path, "/blobs/") && r.Method == http.MethodGet:
				blobGets.Add(1)
				w.WriteHeader(http.StatusServiceUnavailable)
				return
			case strings.Contains(r.URL.Path, "/manifests/"):
				manifestGets.Add(1)
			}
			h.ServeHTTP(w, r)
		})
	}))
	img := reg.SeedImage(t, "team/app", "v1", 1, 256)
	layers, _ := img.Layers()
	ld, _ := layers[0].Digest()
	cfg := testConfig(reg.URL)
	cfg.Retry.Attempts = 4
	c := newClient(t, cfg, WithSleep(noSleep))
	_, err := c.GetBlob(t.Context(), "team/app", digest.Digest(ld.String()), 0)
	if !errors.Is(err, ErrUnavailable) || !Retryable(err) {
		t.Fatalf("err = %v, want a retryable ErrUnavailable", err)
	}
	if blobGets.Load() != 1 {
		t.Fatalf("blob GETs = %d, want 1", blobGets.Load())
	}
	// HEAD of the same blob is metadata: retried, and here it succeeds.
	if _, err := c.HeadBlob(t.Context(), "team/app", digest.Digest(ld.String())); err != nil {
		t.Fatal(err)
	}
}

// TestLongRetryAfterPassedOn: a 429 or 503 whose Retry-After is over
// max_backoff is handed on at once, with its Retry-After, instead of being
// waited for attempts times.
func TestLongRetryAfterPassedOn(t *testing.T) {
	t.Parallel()
	for _, status := range []int{http.StatusTooManyRequests, http.StatusServiceUnavailable} {
		var calls atomic.Int64
		s := serve(t, func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/v2/" {
				return
			}
			calls.Add(1)
			w.Header().Set("Retry-After", "120")
			w.WriteHeader(status)
		})
		cfg := testConfig(s.URL)
		cfg.Retry = config.Retry{Attempts: 4, InitialBackoff: time.Second, MaxBackoff: 10 * time.Second}
		var mu sync.Mutex
		var waits []time.Duration
		c := newClient(t, cfg, WithSleep(func(_ context.Context, d time.Duration) error {
			mu.Lock()
			waits = append(waits, d)
			mu.Unlock()
			return nil
		}))
		_, err := c.GetManifest(t.Context(), "a/b", "v1", nil)
		if d, ok := RetryAfter(err); !ok || d != 120*time.Second || !Temporary(err) {
			t.Fatalf("%d: err = %v, RetryAfter = %v %v", status, err, d, ok)
		}
		if calls.Load() != 1 || len(waits) != 0 {
			t.Fatalf("%d: %d requests, waits %v; want 1 request, no wait", status, calls.Load(), waits)
		}
	}
}

// TestNewBackOff: exponential from InitialBackoff, jittered, never over
// MaxBackoff.
func TestNewBackOff(t *testing.T) {
	t.Parallel()
	b := NewBackOff(config.Retry{Attempts: 4, InitialBackoff: 100 * time.Millisecond, MaxBackoff: time.Second})
	interval := 100 * time.Millisecond
	for i := range 10 {
		d := b.NextBackOff()
		if d == backoff.Stop || d < interval/2 || d > min(interval*3/2+1, time.Second) {
			t.Fatalf("wait %d = %s, want within [%s, %s] capped at 1s", i, d, interval/2, interval*3/2)
		}
		interval = min(interval*2, time.Second)
	}
	b.Reset()
	if d := b.NextBackOff(); d > 150*time.Millisecond+1 {
		t.Fatalf("after Reset: %s", d)
	}
	if d := NewBackOff(config.Retry{}).NextBackOff(); d <= 0 || d > config.DefaultRetry().InitialBackoff*3/2+1 {
		t.Fatalf("defaults: %s", d)
	}
}

// TestRangeNotSatisfiable: a resume at the blob's end answered 416 by a
// real registry is ErrRangeNotSatisfiable, not a generic invalid answer,
// so the fill can tell "every byte already arrived".
func TestRangeNotSatisfiable(t *testing.T) {
	t.Parallel()
	reg := testregistry.Start(t)
	img := reg.SeedImage(t, "team/app", "v1", 1, 1000)
	layers, _ := img.Layers()
	ld, _ := layers[0].Digest()
	size, _ := layers[0].Size()
	c := newClient(t, testConfig(reg.URL))
	_, err := c.GetBlob(t.Context(), "team/app", digest.Digest(ld.String()), size)
	if !errors.Is(err, ErrRangeNotSatisfiable) || errors.Is(err, ErrInvalid) || Temporary(err) {
		t.Fatalf("err = %v, want ErrRangeNotSatisfiable only", err)
	}
	var se *StatusError
	if !errors.As(err, &se) || se.Status != http.StatusRequestedRangeNotSatisfiable || se.Method != http.MethodGet {
		t.Fatalf("StatusError = %+v", se)
	}
	b, err := c.GetBlob(t.Context(), "team/app", digest.Digest(ld.String()), size-10)
	if err != nil {
		t.Fatal(err)
	}
	rest, _ := io.ReadAll(b.Body)
	b.Body.Close()
	if len(rest) != 10 {
		t.Fatalf("last 10 bytes: got %d", len(rest))
	}
}

// TestRetryTiming runs the retry transport on synctest's clock: the waits
// are NewBackOff's or the upstream's Retry-After, never more than
// MaxBackoff, and a longer Retry-After is not waited for at all. The inner
// transport is scripted (a fault a real server would need real time for).
func TestRetryTiming(t *testing.T) {
	t.Parallel()
	policy := config.Retry{Attempts: 4, InitialBackoff: time.Second, MaxBackoff: 5 * time.Second}
	for _, tc := range []struct {
		name       string
		retryAfter string
		calls      int
		min, max   time.Duration
	}{
		{"backoff", "", 4, (1 + 2 + 4) * time.Second / 2, 5 * time.Second * 3},
		{"retry-after", "2", 4, 6 * time.Second, 6 * time.Second},
		{"retry-after over max", "30", 1, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				calls := 0
				rt := &retryTransport{
					inner: roundTripFunc(func(r *http.Request) (*http.Response, error) {
						calls++
						h := http.Header{}
						if tc.retryAfter != "" {
							h.Set("Retry-After", tc.retryAfter)
						}
						return &http.Response{StatusCode: http.StatusServiceUnavailable, Header: h, Body: http.NoBody, Request: r}, nil
					}),
					policy: policy, sleep: sleepContext, log: slog.New(slog.DiscardHandler), now: time.Now,
				}
				req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://registry.test/v2/a/manifests/b", nil)
				start := time.Now()
				resp, err := rt.RoundTrip(req)
				if err != nil || resp.StatusCode != http.StatusServiceUnavailable {
					t.Fatalf("RoundTrip: %v %v", resp, err)
				}
				waited := time.Since(start)
				if calls != tc.calls || waited < tc.min || waited > tc.max {
					t.Fatalf("%d calls in %s; want %d calls in [%s, %s]", calls, waited, tc.calls, tc.min, tc.max)
				}
			})
		})
	}
}
