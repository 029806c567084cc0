package storage

import (
	"hash/fnv"
	"sort"
	"sync"

	"github.com/opencontainers/go-digest"
)

// guardStripes is how many locks the digests share. A removal holds one
// exclusively for a few driver calls; links and commits of digests in
// other stripes go on.
const guardStripes = 64

// blobGuard keeps a blob's links and its removal apart in this process:
// LinkBlob and CommitBlob hold their digest's lock shared, RemoveBlob
// exclusively. A link is then written either before a removal (which
// removes it) or after it (when LinkBlob finds no data and writes
// nothing), never in between, where it would outlive the data. It also
// remembers every repository this Store linked a blob into, so RemoveBlob
// unlinks those even when its caller's list is older than the link.
//
// Other processes sharing the root (a replica on shared storage, a CLI
// beside a server) are not excluded: their eviction is the cluster's
// (one evicting replica), and verify --repair removes what is left.
//
// The zero value is ready to use.
type blobGuard struct {
	stripes [guardStripes]sync.RWMutex

	mu    sync.Mutex
	repos map[string]struct{}
}

func (g *blobGuard) lock(d digest.Digest) *sync.RWMutex {
	h := fnv.New32a()
	_, _ = h.Write([]byte(d))
	return &g.stripes[h.Sum32()%guardStripes]
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
