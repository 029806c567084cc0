package storage

import (
	"testing"

	"github.com/opencontainers/go-digest"
)

// TestBlobGuard: links of one digest share its lock and hold a removal
// off, a removal holds links off, another digest is never held up, and no
// lock is kept once released.
func TestBlobGuard(t *testing.T) {
	t.Parallel()
	var g blobGuard
	a, b := digest.FromString("a"), digest.FromString("b")
	lockOf := func(d digest.Digest) *digestLock {
		g.mu.Lock()
		defer g.mu.Unlock()
		return g.locks[d]
	}
	link1 := g.acquire(a, false)
	link2 := g.acquire(a, false) // shared: does not wait
	if lockOf(a).TryLock() {
		t.Fatal("a removal could start while links held the digest")
	}
	other := g.acquire(b, true) // another digest: does not wait
	if lockOf(b).TryRLock() {
		t.Fatal("a link could start while a removal held the digest")
	}
	other()
	link1()
	link2()
	if l := lockOf(a); l != nil {
		t.Fatalf("digest lock kept after every release (%d refs)", l.refs)
	}
	g.linked("docker.io/library/x")
	if got := g.withLinked([]string{"docker.io/library/y", "docker.io/library/x"}); len(got) != 2 || got[0] != "docker.io/library/x" || got[1] != "docker.io/library/y" {
		t.Errorf("withLinked: %v", got)
	}
}
