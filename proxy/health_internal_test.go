package proxy

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/stowage/stowage/config"
)

type triggerCount struct {
	noHooks
	n atomic.Int32
}

func (c *triggerCount) Trigger() { c.n.Add(1) }

// TestDiskFullEpisodes: every failed write for lack of space triggers
// eviction, but an episode is counted (and logged) once, until a
// successful commit ends it; other storage errors start none.
func TestDiskFullEpisodes(t *testing.T) {
	m, err := newMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{cfg: config.Default(), log: slog.New(slog.DiscardHandler), m: m, now: time.Now}
	hooks := &triggerCount{}
	p.SetCacheHooks(hooks)
	full := fmt.Errorf("write staging file: %w", &fs.PathError{Op: "write", Path: "x", Err: syscall.ENOSPC})
	quota := &fs.PathError{Op: "write", Path: "x", Err: syscall.EDQUOT}

	p.noteStorageError(errors.New("permission denied"))
	if p.DiskFull() || hooks.n.Load() != 0 {
		t.Fatal("a storage error other than space started an episode")
	}
	p.noteStorageError(full)
	p.noteStorageError(quota)
	if !p.DiskFull() || hooks.n.Load() != 2 {
		t.Fatalf("full %v, triggers %d: want an episode and two triggers", p.DiskFull(), hooks.n.Load())
	}
	if got := testutil.ToFloat64(m.diskFullEpisodes); got != 1 {
		t.Fatalf("episodes %v, want 1", got)
	}
	if got := testutil.ToFloat64(m.diskFull); got != 1 {
		t.Fatalf("gauge %v, want 1", got)
	}
	p.noteStorageWrite()
	if p.DiskFull() || testutil.ToFloat64(m.diskFull) != 0 {
		t.Fatal("a commit did not end the episode")
	}
	p.noteStorageError(full)
	if got := testutil.ToFloat64(m.diskFullEpisodes); got != 2 {
		t.Fatalf("episodes %v, want 2", got)
	}
}
