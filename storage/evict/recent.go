package evict

import (
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
)

// RecentLimit is how many evictions RecentEvictions keeps.
const RecentLimit = 100

// Eviction is one blob a pass removed.
type Eviction struct {
	Time   time.Time     `json:"time"`
	Digest digest.Digest `json:"digest"`
	Size   int64         `json:"size"`
	Reason string        `json:"reason,omitempty"` // ReasonSize, ReasonFreeSpace or ReasonAge
}

// recentRing keeps the last RecentLimit evictions. The zero value is
// ready.
type recentRing struct {
	mu   sync.Mutex
	buf  []Eviction // up to RecentLimit, oldest overwritten first
	next int        // where the next one goes once buf is full
}

func (r *recentRing) add(e Eviction) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.buf) < RecentLimit {
		r.buf = append(r.buf, e)
		return
	}
	r.buf[r.next] = e
	r.next = (r.next + 1) % RecentLimit
}

// list returns the evictions newest first.
func (r *recentRing) list() []Eviction {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]Eviction, 0, len(r.buf))
	for i := range len(r.buf) {
		// The newest is just before next (or the last appended).
		j := (r.next - 1 - i + 2*len(r.buf)) % len(r.buf)
		out = append(out, r.buf[j])
	}
	return out
}

// RecentEvictions returns the last RecentLimit blobs the engine evicted,
// newest first. It is safe to call while the engine runs.
func (e *Engine) RecentEvictions() []Eviction { return e.recent.list() }
