package upstream

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/stowage/stowage/config"
)

// TestConnectionsCapCountedAtUpstream sends more concurrent blob GETs than
// limits.connections allows and counts, at the upstream, how many requests
// are in progress at once.
func TestConnectionsCapCountedAtUpstream(t *testing.T) {
	t.Parallel()
	const limit, requests = 3, 10
	var inFlight, most atomic.Int64
	gate := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.Contains(r.URL.Path, "/blobs/") {
			w.WriteHeader(http.StatusOK) // the /v2/ ping
			return
		}
		n := inFlight.Add(1)
		defer inFlight.Add(-1)
		for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
		}
		<-gate
		_, _ = io.WriteString(w, "layer")
	}))
	defer srv.Close()
	cfg := testConfig(srv.URL)
	cfg.Limits = config.Limits{Connections: limit}
	budget, _ := newTestBudget(t, config.Link{})
	c := newClient(t, cfg, WithBudget(budget))

	var wg sync.WaitGroup
	errs := make(chan error, requests)
	for range requests {
		wg.Go(func() {
			b, err := c.GetBlob(t.Context(), "library/x", digest.FromString("layer"), 0)
			if err != nil {
				errs <- err
				return
			}
			_, err = io.Copy(io.Discard, b.Body)
			errs <- err
			_ = b.Body.Close()
		})
	}
	// Release the upstream once every request is either at the upstream
	// or queued for a slot (bounded wait).
	deadline := time.Now().Add(10 * time.Second)
	for inFlight.Load()+c.limits.waiting.Load() < requests && most.Load() <= limit && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	close(gate)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	t.Logf("at most %d of %d requests at the upstream at once (cap %d)", most.Load(), requests, limit)
	if most.Load() > limit {
		t.Errorf("%d concurrent requests at the upstream, cap %d", most.Load(), limit)
	}
	if most.Load() < limit {
		t.Errorf("only %d concurrent requests reached the upstream, want the cap %d in use", most.Load(), limit)
	}
}
