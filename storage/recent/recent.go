// Package recent keeps the last few events of a kind (evictions, stale
// serves) for operators to look at: a fixed-size ring, safe for concurrent
// use, listed newest first.
package recent

import "sync"

// Ring keeps the last events added. Make one with New; a nil Ring keeps
// nothing and lists nothing.
type Ring[T any] struct {
	size int
	mu   sync.Mutex
	buf  []T // up to size, oldest overwritten first
	next int // where the next one goes once buf is full
}

// New returns a ring that keeps the last size events (at least one).
func New[T any](size int) *Ring[T] {
	return &Ring[T]{size: max(size, 1)}
}

// Add records an event, dropping the oldest when the ring is full.
func (r *Ring[T]) Add(v T) {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.buf) < r.size {
		r.buf = append(r.buf, v)
		return
	}
	r.buf[r.next] = v
	r.next = (r.next + 1) % r.size
}

// List returns the events kept, newest first.
func (r *Ring[T]) List() []T {
	if r == nil {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	n := len(r.buf)
	out := make([]T, 0, n)
	for i := range n {
		// The newest is just before next (or the last appended).
		out = append(out, r.buf[(r.next-1-i+2*n)%n])
	}
	return out
}
