package usage_test

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/stowage/stowage/storage"
	"github.com/stowage/stowage/storage/usage"
)

func newFS(t *testing.T, root string) *storage.Store {
	t.Helper()
	s, err := storage.NewFilesystem(root)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func commit(t *testing.T, s *storage.Store, body []byte) digest.Digest {
	t.Helper()
	d := digest.FromBytes(body)
	st, err := s.NewStaging(d)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.File.Write(body); err != nil {
		t.Fatal(err)
	}
	if err := s.CommitBlob(t.Context(), d, st); err != nil {
		t.Fatal(err)
	}
	return d
}

// midWalk calls during once, at the first blob the walk reports.
type midWalk struct {
	*storage.Store
	during func()
}

func (m *midWalk) WalkBlobs(ctx context.Context, fn func(storage.BlobRecord) error) error {
	first := true
	return m.Store.WalkBlobs(ctx, func(b storage.BlobRecord) error {
		if first {
			first = false
			m.during()
		}
		return fn(b)
	})
}

func TestRebuildKeepsNotificationsDuringTheWalk(t *testing.T) {
	t.Parallel()
	s := newFS(t, t.TempDir())
	a := commit(t, s, bytes.Repeat([]byte("a"), 100))
	b := commit(t, s, bytes.Repeat([]byte("b"), 200))
	m := digest.FromString("{}")
	if err := s.PutManifest(t.Context(), "lib/app", m, []byte("{}")); err != nil {
		t.Fatal(err)
	}
	x := usage.New(nil)
	if x.IsReady() {
		t.Fatal("ready before the first rebuild")
	}
	var c digest.Digest
	src := &midWalk{Store: s, during: func() {
		// While the walk runs: b is evicted by someone, c is committed.
		if _, err := s.RemoveBlob(t.Context(), b, nil); err != nil {
			t.Error(err)
		}
		x.Removed(b)
		c = commit(t, s, bytes.Repeat([]byte("c"), 50))
		x.Added(c, 50)
	}}
	if err := x.Rebuild(t.Context(), src); err != nil {
		t.Fatal(err)
	}
	if !x.IsReady() {
		t.Fatal("not ready after a rebuild")
	}
	got := map[digest.Digest]usage.Blob{}
	for _, bl := range x.Snapshot() {
		got[bl.Digest] = bl
	}
	if _, ok := got[b]; ok {
		t.Error("a blob removed during the walk came back")
	}
	if got[a].Size != 100 || got[c].Size != 50 || !got[m].Manifest || got[a].Manifest {
		t.Errorf("index %+v", got)
	}
	if n, objs := x.Usage(); n != 152 || objs != 3 {
		t.Errorf("usage %d bytes, %d objects; want 152, 3", n, objs)
	}
}

func TestAccessTimesPersistAndRestore(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	s := newFS(t, root)
	a := commit(t, s, []byte("a"))
	b := commit(t, s, []byte("b"))
	now := time.Unix(1_900_000_000, 0)
	x := usage.New(func() time.Time { return now })
	if err := x.Rebuild(t.Context(), s); err != nil {
		t.Fatal(err)
	}
	log := usage.NewAccessLog(s, x)
	x.Touched(a)
	if err := log.Save(t.Context()); err != nil {
		t.Fatal(err)
	}
	// Nothing new: no file is written.
	if err := log.Save(t.Context()); err != nil {
		t.Fatal(err)
	}
	now = now.Add(time.Hour)
	x.Touched(b)
	if err := log.Save(t.Context()); err != nil {
		t.Fatal(err)
	}
	times, files, err := usage.LoadAccess(t.Context(), s)
	if err != nil {
		t.Fatal(err)
	}
	if files != 2 {
		t.Errorf("%d access files, want 2 (one per Save with accesses)", files)
	}
	// A new process restores them.
	y := usage.New(nil)
	if err := usage.NewAccessLog(s, y).Restore(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := y.Rebuild(t.Context(), s); err != nil {
		t.Fatal(err)
	}
	la, _ := y.LastUsed(a)
	lb, _ := y.LastUsed(b)
	if !times[a].Equal(now.Add(-time.Hour)) || !la.Equal(now.Add(-time.Hour)) || !lb.Equal(now) {
		t.Errorf("restored a=%v b=%v (files: %v)", la, lb, times)
	}
}

func TestAccessLogCompacts(t *testing.T) {
	t.Parallel()
	s := newFS(t, t.TempDir())
	a := commit(t, s, []byte("a"))
	now := time.Unix(1_900_000_000, 0)
	x := usage.New(func() time.Time { return now })
	if err := x.Rebuild(t.Context(), s); err != nil {
		t.Fatal(err)
	}
	log := usage.NewAccessLog(s, x)
	for range 100 {
		now = now.Add(time.Second)
		x.Touched(a)
		if err := log.Save(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	times, files, err := usage.LoadAccess(t.Context(), s)
	if err != nil {
		t.Fatal(err)
	}
	if files > 65 || !times[a].Equal(now) {
		t.Errorf("%d files, a at %v; want at most 65 files and the last time %v", files, times[a], now)
	}
}
