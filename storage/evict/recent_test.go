package evict

import (
	"fmt"
	"testing"
	"testing/synctest"
	"time"
)

// wantRecent checks RecentEvictions: the named blobs, newest first, with
// their reason and size, at the bubble's time of the pass.
func wantRecent(reason string, size int64, names ...string) step {
	return func(h *harness) {
		h.t.Helper()
		got := h.eng.RecentEvictions()
		if len(got) != len(names) {
			h.t.Fatalf("%d recent evictions, want %d: %+v", len(got), len(names), got)
		}
		for i, n := range names {
			e := got[i]
			if e.Digest != h.blobs[n] || e.Reason != reason || e.Size != size {
				h.t.Fatalf("recent[%d] = %+v, want %s (%s, %d bytes)", i, e, n, reason, size)
			}
			if e.Time.IsZero() || e.Time.After(time.Now()) {
				h.t.Fatalf("recent[%d].Time = %v", i, e.Time)
			}
		}
	}
}

func TestRecentEvictionsSteps(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		const grace = 10 * time.Minute
		h := newHarness(t, Policy{MaxSize: 1000, Grace: grace})
		for _, s := range []step{
			wantRecent(ReasonSize, 300),
			add("a", 300), sleep(time.Minute), add("b", 300), sleep(time.Minute),
			add("c", 300), sleep(grace),
			wantRecent(ReasonSize, 300),
			// 1200 > 1000: free 300: a (LRU) goes.
			add("d", 300),
			want("b", "c", "d"), wantRecent(ReasonSize, 300, "a"),
			sleep(grace), touch("d"),
			// 1200 again: b, the least recently used, goes; newest first.
			add("e", 300),
			want("c", "d", "e"), wantRecent(ReasonSize, 300, "b", "a"),
		} {
			s(h)
		}
	})
}

func TestRecentEvictionsBounded(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, Policy{EvictAfter: time.Hour, Grace: time.Minute})
		const n = RecentLimit + 5
		for i := range n {
			add(fmt.Sprintf("b%03d", i), 10)(h)
			sleep(time.Second)(h)
		}
		// The minute ticker's passes evict them all, oldest first.
		sleep(2 * time.Hour)(h)
		want()(h)
		got := h.eng.RecentEvictions()
		if len(got) != RecentLimit {
			t.Fatalf("%d recent evictions, want %d", len(got), RecentLimit)
		}
		for i, e := range got {
			name := fmt.Sprintf("b%03d", n-1-i)
			if e.Digest != h.blobs[name] || e.Reason != ReasonAge {
				t.Fatalf("recent[%d] = %+v, want %s (age)", i, e, name)
			}
		}
	})
}
