package upstream

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/stowage/stowage/config"
)

// downStore is a shared store that fails while down is set (the fault a
// real Redis gives when it goes away) and grants everything otherwise.
type downStore struct {
	down  atomic.Bool
	takes atomic.Int64
}

var errDown = errors.New("dial tcp 127.0.0.1:6379: connect: connection refused")

func (s *downStore) Take(context.Context, string, int64, int64, int64) (bool, time.Duration, error) {
	if s.down.Load() {
		return false, 0, errDown
	}
	s.takes.Add(1)
	return true, 0, nil
}

func (s *downStore) MarkBusy(context.Context, string, time.Duration) error {
	if s.down.Load() {
		return errDown
	}
	return nil
}

func (s *downStore) Busy(context.Context, string) (bool, error) {
	if s.down.Load() {
		return false, errDown
	}
	return false, nil
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func TestBudgetSharedStoreFallbackAndRecovery(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := &downStore{}
		store.down.Store(true)
		var logs lockedBuffer
		b, _ := newTestBudget(t, config.Link{PrefetchShare: 30},
			WithBudgetStore(store), WithBudgetLogger(slog.New(slog.NewTextHandler(&logs, nil))))
		l := newLimits("a.test", config.Limits{Bandwidth: 1_000_000}, b, viaProxy(""))

		// Store down: the process's own cap still paces the body.
		n, took := readAll(t, open(t, t.Context(), l, body(1_000_000)))
		if n != 1_000_000 || !near(took, 937500*time.Microsecond, 10*time.Millisecond) {
			t.Errorf("with the store down: %d bytes in %v, want the local cap (0.94s)", n, took)
		}
		if got := strings.Count(logs.String(), "shared bandwidth budget unavailable"); got != 1 {
			t.Errorf("fallback logged %d times, want once; logs:\n%s", got, logs.String())
		}
		if got := testutil.ToFloat64(b.m.shared); got != 0 {
			t.Errorf("stowage_budget_shared = %v while down", got)
		}

		// Back up: used again once the retry delay has passed.
		store.down.Store(false)
		time.Sleep(b.opts.retry)
		readAll(t, open(t, t.Context(), l, body(200_000)))
		if store.takes.Load() == 0 {
			t.Error("the store was not asked again after it came back")
		}
		if !strings.Contains(logs.String(), "shared bandwidth budget available again") {
			t.Errorf("no recovery log line:\n%s", logs.String())
		}
		if got := testutil.ToFloat64(b.m.shared); got != 1 {
			t.Errorf("stowage_budget_shared = %v after recovery", got)
		}
	})
}
