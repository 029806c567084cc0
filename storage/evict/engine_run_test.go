package evict

import (
	"context"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stowage/stowage/storage/usage"
)

// startEngine runs a new engine over h's store (replacing h.eng) until the
// returned stop is called.
func (h *harness) startEngine(p Policy) (stop func()) {
	h.t.Helper()
	eng, err := New(h.store, p)
	if err != nil {
		h.t.Fatal(err)
	}
	h.eng = eng
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- eng.Run(ctx) }()
	synctest.Wait()
	return func() {
		cancel()
		if err := <-done; err != nil {
			h.t.Error(err)
		}
	}
}

// TestEngineAccessTimesSurviveARestart: hits are persisted once per
// interval (one file for three hits); the next engine restores them,
// so its first pass, over the cap at start, evicts by the restored order.
func TestEngineAccessTimesSurviveARestart(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, Policy{Grace: time.Minute})
		for _, s := range []step{
			add("a", 100), sleep(time.Second), add("b", 100), sleep(time.Second), add("c", 100),
			sleep(2 * time.Minute), touch("a"), touch("a"), touch("a"),
		} {
			s(h)
		}
		files := func() int {
			_, n, err := usage.LoadAccess(context.Background(), h.store)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
		before := files()
		time.Sleep(time.Minute) // the persistence interval
		synctest.Wait()
		if got := files(); got != before+1 {
			t.Fatalf("access files %d -> %d after three hits and one interval; want one more", before, got)
		}
		// Restart with a cap that holds two of the three: the restored
		// access keeps a, so b (the least recently used) goes.
		stop := h.startEngine(Policy{MaxSize: 250, Grace: time.Minute})
		defer stop()
		want("a", "c")(h)
	})
}

// TestEngineRescanSeesExternalRemovals: a blob removed by another process
// (gc, an operator) leaves the index's usage at the next rebuild.
func TestEngineRescanSeesExternalRemovals(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, Policy{Grace: time.Minute})
		add("a", 100)(h)
		add("b", 50)(h)
		if _, err := h.store.RemoveBlob(context.Background(), h.blobs["a"], nil); err != nil {
			t.Fatal(err)
		}
		wantUsage(150)(h)
		time.Sleep(6 * time.Hour)
		synctest.Wait()
		wantUsage(50)(h)
	})
}
