package recent_test

import (
	"testing"

	"github.com/stowage/stowage/storage/recent"
)

// TestRingWraps: after every add the ring holds the last size values,
// newest first, across several wraps.
func TestRingWraps(t *testing.T) {
	t.Parallel()
	const size = 5
	r := recent.New[int](size)
	if got := r.List(); len(got) != 0 {
		t.Fatalf("empty ring lists %v", got)
	}
	var none *recent.Ring[int]
	none.Add(1)
	if got := none.List(); got != nil {
		t.Fatalf("nil ring lists %v", got)
	}
	for i := range 3*size + 2 {
		r.Add(i)
		l := r.List()
		if want := min(i+1, size); len(l) != want {
			t.Fatalf("after %d adds: %d entries, want %d", i+1, len(l), want)
		}
		for j, v := range l {
			if v != i-j {
				t.Fatalf("after %d adds: List()[%d] = %d, want %d", i+1, j, v, i-j)
			}
		}
	}
}
