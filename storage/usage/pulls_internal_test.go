package usage

import (
	"context"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"
)

// memRecords is a record store in memory that reads like storage.Store
// (list the names, then read each, leaving out what vanished meanwhile),
// and can run another process's actions between the listing and the
// reads: the interleaving a test cannot get on demand from a real store.
type memRecords struct {
	mu      sync.Mutex
	files   map[string][]byte
	between func() // run once, after the next listing
}

func (m *memRecords) PutRecord(_ context.Context, _, name string, data []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.files[name] = append([]byte(nil), data...)
	return nil
}

func (m *memRecords) DeleteRecord(_ context.Context, _, name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.files, name)
	return nil
}

func (m *memRecords) Records(_ context.Context, _ string) (map[string][]byte, error) {
	m.mu.Lock()
	names := slices.Collect(maps.Keys(m.files))
	between := m.between
	m.between = nil
	m.mu.Unlock()
	if between != nil {
		between()
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[string][]byte{}
	for _, n := range names {
		if b, ok := m.files[n]; ok {
			out[n] = b
		}
	}
	return out, nil
}

// TestPullsConcurrentCompactions: replica Y lists the files to compact
// them; before it reads them, replica X (its clock a minute behind)
// compacts and deletes what it may; then Y writes its snapshot, the one
// readers pick. Every round, the loaded count must be exact. (Deleting
// what a compaction has just summed, rather than what its starting
// snapshot covered, loses the deltas Y listed but could not read.)
func TestPullsConcurrentCompactions(t *testing.T) {
	t.Parallel()
	rec := &memRecords{files: map[string][]byte{}}
	ctx := t.Context()
	const repo = "docker.io/library/alpine"
	now := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	want := int64(0)
	delta := func() {
		t.Helper()
		now = now.Add(time.Minute)
		want++
		if err := rec.PutRecord(ctx, PullsKind, deltaName(now), encodePulls(map[string]PullCount{repo: {Count: 1, Last: now}})); err != nil {
			t.Fatal(err)
		}
	}
	check := func(what string) {
		t.Helper()
		got, err := LoadPulls(ctx, rec)
		if err != nil {
			t.Fatal(err)
		}
		if got[repo].Count != want {
			t.Fatalf("%s: %d pulls loaded, want %d", what, got[repo].Count, want)
		}
	}
	for range 30 {
		delta()
	}
	if err := compactPulls(ctx, rec, now); err != nil {
		t.Fatal(err)
	}
	check("after the first compaction")
	for round := range 5 {
		for range 30 {
			delta()
		}
		x := now
		rec.mu.Lock()
		rec.between = func() {
			if err := compactPulls(ctx, rec, x); err != nil {
				t.Error(err)
			}
			check("after X's compaction")
		}
		rec.mu.Unlock()
		if err := compactPulls(ctx, rec, now.Add(time.Minute)); err != nil {
			t.Fatal(err)
		}
		check("after Y's compaction")
		t.Logf("round %d: %d files", round, len(rec.files))
	}
}
