package storage

import (
	"sort"
	"sync"

	"github.com/opencontainers/go-digest"
)

// blobGuard keeps a blob's links and its removal apart in this process:
// LinkBlob and CommitBlob hold their digest's lock shared, RemoveBlob
// exclusively. A link is then written either before a removal (which
// removes it) or after it (when LinkBlob finds no data and writes
// nothing), never in between, where it would outlive the data. It also
// remembers every repository this Store linked a blob into, so RemoveBlob
// unlinks those even when its caller's list is older than the link.
//
// The locks are per digest (not striped): a removal on object storage
// deletes a link in every repository and may take seconds, and it must
// not hold up the commits of other blobs meanwhile.
//
// Other processes sharing the root (a replica on shared storage, a CLI
// beside a server) are not excluded: their eviction is the cluster's
// (one evicting replica), and verify --repair removes what is left.
//
// The zero value is ready to use.
type blobGuard struct {
	mu    sync.Mutex
	locks map[digest.Digest]*digestLock
	repos map[string]struct{}
}

type digestLock struct {
	sync.RWMutex
	refs int // guarded by blobGuard.mu
}

// acquire returns d's lock, taken shared or exclusively, and its release.
func (g *blobGuard) acquire(d digest.Digest, exclusive bool) (release func()) {
	g.mu.Lock()
	if g.locks == nil {
		g.locks = map[digest.Digest]*digestLock{}
	}
	l := g.locks[d]
	if l == nil {
		l = &digestLock{}
		g.locks[d] = l
	}
	l.refs++
	g.mu.Unlock()
	if exclusive {
		l.Lock()
	} else {
		l.RLock()
	}
	return func() {
		if exclusive {
			l.Unlock()
		} else {
			l.RUnlock()
		}
		g.mu.Lock()
		if l.refs--; l.refs == 0 {
			delete(g.locks, d)
		}
		g.mu.Unlock()
	}
}

// linked records that repo gets a link (before it is written).
func (g *blobGuard) linked(repo string) {
	g.mu.Lock()
	if g.repos == nil {
		g.repos = map[string]struct{}{}
	}
	g.repos[repo] = struct{}{}
	g.mu.Unlock()
}

// withLinked returns repos and every repository linked through this
// Store, each once, sorted.
func (g *blobGuard) withLinked(repos []string) []string {
	seen := make(map[string]struct{}, len(repos))
	out := make([]string, 0, len(repos))
	add := func(r string) {
		if _, ok := seen[r]; !ok {
			seen[r] = struct{}{}
			out = append(out, r)
		}
	}
	for _, r := range repos {
		add(r)
	}
	g.mu.Lock()
	for r := range g.repos {
		add(r)
	}
	g.mu.Unlock()
	sort.Strings(out)
	return out
}
