package evict

import (
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

// RecentEvictions returns the last RecentLimit blobs the engine evicted,
// newest first. It is safe to call while the engine runs.
func (e *Engine) RecentEvictions() []Eviction { return e.recent.List() }
