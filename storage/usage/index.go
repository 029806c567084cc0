package usage

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/stowage/stowage/storage"
)

// Source is what a rebuild reads: the blobs on disk and the manifests the
// repositories hold. *storage.Store satisfies it.
type Source interface {
	WalkBlobs(ctx context.Context, fn func(storage.BlobRecord) error) error
	LinkedRepositories(ctx context.Context) ([]string, error)
	RevisionLinks(ctx context.Context, repo string) ([]storage.LinkEntry, error)
}

// Blob is one entry of the index as Snapshot returns it.
type Blob struct {
	Digest digest.Digest
	Size   int64
	// Cached is when the blob was committed (its file's modification
	// time after a rebuild).
	Cached time.Time
	// LastUsed is the later of Cached and the last access.
	LastUsed time.Time
	// Manifest is set for manifest bytes, which eviction keeps.
	Manifest bool
}

type entry struct {
	size     int64
	cached   time.Time
	manifest bool
	// epoch is the rebuild epoch of the last Added, so a rebuild keeps
	// entries added while it walked.
	epoch uint64
}

// Index is the in-memory usage index. The zero value is not usable; call
// New. Safe for concurrent use.
type Index struct {
	now func() time.Time

	mu     sync.Mutex
	blobs  map[digest.Digest]entry
	access map[digest.Digest]time.Time
	// dirty are the accesses not yet persisted.
	dirty map[digest.Digest]time.Time
	total int64
	epoch uint64
	// removed are digests removed during the current rebuild epoch, so the
	// rebuild does not bring them back.
	removed map[digest.Digest]uint64

	readyOnce sync.Once
	ready     chan struct{}
}

// New returns an empty index, not ready until the first Rebuild ends.
// now is the clock (time.Now when nil).
func New(now func() time.Time) *Index {
	if now == nil {
		now = time.Now
	}
	return &Index{
		now:     now,
		blobs:   map[digest.Digest]entry{},
		access:  map[digest.Digest]time.Time{},
		dirty:   map[digest.Digest]time.Time{},
		removed: map[digest.Digest]uint64{},
		ready:   make(chan struct{}),
	}
}

// Ready is closed when the first rebuild has completed.
func (x *Index) Ready() <-chan struct{} { return x.ready }

// IsReady reports whether the first rebuild has completed.
func (x *Index) IsReady() bool {
	select {
	case <-x.ready:
		return true
	default:
		return false
	}
}

// Added records a committed blob (a fill's commit, an import).
func (x *Index) Added(d digest.Digest, size int64) { x.add(d, size, false) }

// ManifestAdded records stored manifest bytes. Manifests count towards
// usage but are never evicted (they are tiny, and a manifest whose blobs
// were evicted stays servable).
func (x *Index) ManifestAdded(d digest.Digest, size int64) { x.add(d, size, true) }

func (x *Index) add(d digest.Digest, size int64, manifest bool) {
	now := x.now()
	x.mu.Lock()
	defer x.mu.Unlock()
	old, ok := x.blobs[d]
	if ok {
		x.total -= old.size
		manifest = manifest || old.manifest
	}
	x.blobs[d] = entry{size: size, cached: now, manifest: manifest, epoch: x.epoch}
	x.total += size
	delete(x.removed, d)
	x.touchLocked(d, now)
}

// Touched records a use of d (a cache hit). It costs a map write; the
// time reaches the disk with the next AccessLog.Save.
func (x *Index) Touched(d digest.Digest) {
	now := x.now()
	x.mu.Lock()
	x.touchLocked(d, now)
	x.mu.Unlock()
}

func (x *Index) touchLocked(d digest.Digest, t time.Time) {
	if t.After(x.access[d]) {
		x.access[d] = t
		x.dirty[d] = t
	}
}

// Removed records that d is gone from the cache.
func (x *Index) Removed(d digest.Digest) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if e, ok := x.blobs[d]; ok {
		x.total -= e.size
		delete(x.blobs, d)
	}
	delete(x.access, d)
	delete(x.dirty, d)
	x.removed[d] = x.epoch
}

// Usage returns the bytes and number of blobs the index knows.
func (x *Index) Usage() (bytes int64, objects int) {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.total, len(x.blobs)
}

// LastUsed returns when d was last used (or cached), and whether the index
// holds it.
func (x *Index) LastUsed(d digest.Digest) (time.Time, bool) {
	x.mu.Lock()
	defer x.mu.Unlock()
	e, ok := x.blobs[d]
	if !ok {
		return time.Time{}, false
	}
	return laterOf(e.cached, x.access[d]), true
}

func laterOf(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// Snapshot returns every blob, least recently used first.
func (x *Index) Snapshot() []Blob {
	x.mu.Lock()
	out := make([]Blob, 0, len(x.blobs))
	for d, e := range x.blobs {
		out = append(out, Blob{Digest: d, Size: e.size, Cached: e.cached, LastUsed: laterOf(e.cached, x.access[d]), Manifest: e.manifest})
	}
	x.mu.Unlock()
	sort.Slice(out, func(i, j int) bool {
		if !out[i].LastUsed.Equal(out[j].LastUsed) {
			return out[i].LastUsed.Before(out[j].LastUsed)
		}
		return out[i].Digest < out[j].Digest
	})
	return out
}

// RestoreAccess merges persisted access times (the later time wins).
// They are not marked dirty: they are on disk already.
func (x *Index) RestoreAccess(times map[digest.Digest]time.Time) {
	x.mu.Lock()
	defer x.mu.Unlock()
	for d, t := range times {
		if t.After(x.access[d]) {
			x.access[d] = t
		}
	}
}

// Access returns a copy of every known access time.
func (x *Index) Access() map[digest.Digest]time.Time {
	x.mu.Lock()
	defer x.mu.Unlock()
	out := make(map[digest.Digest]time.Time, len(x.access))
	for d, t := range x.access {
		out[d] = t
	}
	return out
}

// takeDirty returns and clears the accesses not yet persisted.
func (x *Index) takeDirty() map[digest.Digest]time.Time {
	x.mu.Lock()
	defer x.mu.Unlock()
	if len(x.dirty) == 0 {
		return nil
	}
	d := x.dirty
	x.dirty = map[digest.Digest]time.Time{}
	return d
}

// returnDirty puts back accesses whose persistence failed.
func (x *Index) returnDirty(m map[digest.Digest]time.Time) {
	x.mu.Lock()
	defer x.mu.Unlock()
	for d, t := range m {
		if _, gone := x.removed[d]; gone {
			continue
		}
		if t.After(x.dirty[d]) {
			x.dirty[d] = t
		}
	}
}

// Rebuild replaces the index's view of the disk with a fresh walk of src,
// keeping what was added and dropping what was removed while it walked.
// The first successful Rebuild makes the index ready. Access times are
// kept (dropped only with their blob).
func (x *Index) Rebuild(ctx context.Context, src Source) error {
	x.mu.Lock()
	x.epoch++
	epoch := x.epoch
	x.mu.Unlock()

	manifests := map[digest.Digest]bool{}
	repos, err := src.LinkedRepositories(ctx)
	if err != nil {
		return fmt.Errorf("usage index: %w", err)
	}
	for _, r := range repos {
		revs, err := src.RevisionLinks(ctx, r)
		if err != nil {
			return fmt.Errorf("usage index: %s: %w", r, err)
		}
		for _, e := range revs {
			if e.Digest != "" {
				manifests[e.Digest] = true
			}
		}
	}
	walked := map[digest.Digest]entry{}
	err = src.WalkBlobs(ctx, func(b storage.BlobRecord) error {
		walked[b.Digest] = entry{size: b.Size, cached: b.ModTime, manifest: manifests[b.Digest]}
		return nil
	})
	if err != nil {
		return fmt.Errorf("usage index: %w", err)
	}

	x.mu.Lock()
	for d, e := range x.blobs {
		if e.epoch == epoch {
			walked[d] = e // added while walking: newer than the walk
		}
	}
	for d, ep := range x.removed {
		if ep == epoch {
			delete(walked, d)
		}
	}
	var total int64
	for _, e := range walked {
		total += e.size
	}
	x.blobs, x.total = walked, total
	clear(x.removed)
	for d := range x.access {
		if _, ok := walked[d]; !ok {
			delete(x.access, d)
		}
	}
	x.mu.Unlock()
	x.readyOnce.Do(func() { close(x.ready) })
	return nil
}

// ErrNotReady is returned by what needs a complete index before the first
// rebuild has finished.
var ErrNotReady = errors.New("usage index: not ready")
