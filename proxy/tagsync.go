package proxy

import (
	"context"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/stowage/stowage/storage"
)

// TagSync shares the tag policy between the replicas of one cache
// (cluster.RedisTags): when a tag was last confirmed upstream, and retags.
// Without one, replicas on one storage still share the fetched-at time the
// storage records; TagSync makes it cheap to read and pushes retags.
type TagSync interface {
	// Fetched returns what repo:tag pointed at when a replica last
	// confirmed it upstream, and when (ok false: unknown or unavailable).
	Fetched(ctx context.Context, repo, tag string) (dgst string, at time.Time, ok bool)
	// Confirmed records a confirmation; moved tells the other replicas to
	// drop their in-memory resolution of the tag.
	Confirmed(ctx context.Context, repo, tag, dgst string, at time.Time, moved bool)
	// Watch calls forget for every retag another replica publishes, until
	// the TagSync is closed.
	Watch(forget func(repo, tag string))
}

// WithTagSync shares tag revalidations and retags with the other replicas.
// The proxy closes it (when it is an io.Closer) on Close.
func WithTagSync(s TagSync) Option { return func(o *options) { o.tags = s } }

// tagCheckKey is the lease key of a tag's revalidation: one replica asks
// the upstream, the others wait for its answer.
func tagCheckKey(repo, tag string) string { return "tagcheck:" + repo + ":" + tag }

// maxTagCheckWait bounds how long a replica waits for another one's
// revalidation before it asks the upstream itself.
const maxTagCheckWait = 10 * time.Second

// sharedTag looks for a newer confirmation of a stale tag made by another
// replica: in Redis (cheap), then on the shared storage. It returns the
// newest resolution known and whether it is fresh.
func (p *Proxy) sharedTag(ctx context.Context, q *request, local storage.Tag) (storage.Tag, bool) {
	if p.tags != nil {
		if d, at, ok := p.tags.Fetched(ctx, q.cacheRepo, q.tag); ok && d == local.Digest.String() && at.After(local.FetchedAt) {
			t := storage.Tag{Digest: local.Digest, FetchedAt: at}
			if p.tagFresh(t) {
				p.mem.putTag(q.cacheRepo, q.tag, t, p.now())
				return t, true
			}
		}
	}
	disk, err := p.store.GetTag(ctx, q.cacheRepo, q.tag)
	if err != nil {
		return local, false
	}
	p.mem.putTag(q.cacheRepo, q.tag, disk, p.now())
	return disk, p.tagFresh(disk)
}

// tagCheck takes the cluster-wide lease of a tag's revalidation. When
// another replica holds it, it waits (bounded) for that one to finish and
// returns the resolution it left when fresh (done true). Otherwise it
// returns the release of the lease (a no-op without a coordinator, or when
// the wait ran out) and this replica asks the upstream.
func (p *Proxy) tagCheck(ctx context.Context, q *request, local storage.Tag) (release func(), t storage.Tag, done bool) {
	if p.coord == nil || p.tags == nil {
		return func() {}, local, false
	}
	key := tagCheckKey(q.cacheRepo, q.tag)
	deadline := time.Now().Add(maxTagCheckWait)
	for {
		rel, ok, err := p.coord.TryAcquire(ctx, key)
		if err != nil {
			return func() {}, local, false
		}
		if ok {
			// The holder before us may have finished between our look and
			// the lease.
			if t, fresh := p.sharedTag(ctx, q, local); fresh {
				rel()
				return nil, t, true
			}
			return rel, local, false
		}
		for {
			if t, fresh := p.sharedTag(ctx, q, local); fresh {
				return nil, t, true
			}
			if !time.Now().Before(deadline) {
				return func() {}, local, false
			}
			select {
			case <-ctx.Done():
				return func() {}, local, false
			case <-time.After(leasePoll):
			}
			if held, err := p.coord.Held(ctx, key); err != nil || !held {
				break
			}
		}
	}
}

// tagConfirmed publishes a confirmation of repo:tag (no-op without
// TagSync).
func (p *Proxy) tagConfirmed(ctx context.Context, repo, tag string, d digest.Digest, at time.Time, moved bool) {
	if p.tags != nil {
		p.tags.Confirmed(ctx, repo, tag, d.String(), at, moved)
	}
}
