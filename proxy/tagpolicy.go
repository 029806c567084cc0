package proxy

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/stowage/stowage/storage"
	"github.com/stowage/stowage/upstream"
)

// manifestByTag applies the tag policy: a fresh tag is served locally; a
// stale one is revalidated with an upstream HEAD (same digest: refresh the
// time; new digest: fetch it); when the upstream fails, the stale copy is
// served within max-stale, logged and counted.
func (p *Proxy) manifestByTag(ctx context.Context, q *request) (*resolvedManifest, error) {
	local, err := p.localTag(ctx, q)
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		return nil, err
	}
	if err != nil {
		p.m.misses.WithLabelValues("tag").Inc()
		return p.fetchManifest(ctx, q, q.tag)
	}
	age := p.now().Sub(local.FetchedAt)
	if local.FetchedAt.IsZero() || age < p.cfg.Cache.TagTTL {
		// Fresh, or written by a stock registry or an import: nothing to
		// revalidate against.
		p.m.hits.WithLabelValues("tag").Inc()
		return p.localManifest(ctx, q, local)
	}
	m, err := p.revalidateTag(ctx, q, local)
	if err == nil {
		return m, nil
	}
	if upstream.Temporary(err) {
		p.down.mark(q.host, p.now(), err)
	}
	if errors.Is(err, upstream.ErrNotFound) || errors.Is(err, upstream.ErrDenied) ||
		errors.Is(err, upstream.ErrUnauthorized) {
		// The upstream answered: the tag is gone or forbidden. Serving the
		// old copy would hide a deliberate change.
		return nil, err
	}
	if max := p.cfg.Cache.MaxStale; max > 0 && age > p.cfg.Cache.TagTTL+max {
		return nil, fmt.Errorf("tag stale beyond max_stale (%s): %w", max, err)
	}
	p.m.staleServes.WithLabelValues(q.host).Inc()
	p.log.Warn("upstream failed; serving stale tag", "repo", q.cacheRepo, "tag", q.tag,
		"digest", local.Digest, "age", age.Round(1e9).String(), "err", err)
	return p.localManifest(ctx, q, local)
}

func (p *Proxy) localTag(ctx context.Context, q *request) (storage.Tag, error) {
	if t, ok := p.mem.tag(q.cacheRepo, q.tag); ok {
		return t, nil
	}
	t, err := p.store.GetTag(ctx, q.cacheRepo, q.tag)
	if err != nil {
		return storage.Tag{}, err
	}
	p.mem.putTag(q.cacheRepo, q.tag, t)
	return t, nil
}

func (p *Proxy) localManifest(ctx context.Context, q *request, t storage.Tag) (*resolvedManifest, error) {
	dq := *q
	dq.dgst, dq.tag = t.Digest, ""
	return p.manifestByDigest(ctx, &dq)
}

// revalidateTag asks the upstream what the tag points at now.
func (p *Proxy) revalidateTag(ctx context.Context, q *request, local storage.Tag) (*resolvedManifest, error) {
	if until, down := p.down.check(q.host, p.now()); down {
		// The upstream failed moments ago: serve stale now instead of
		// making every client wait through the retries again.
		return nil, fmt.Errorf("%w: %s failed recently; next try after %s", upstream.ErrUnavailable, q.host, until.Format(time.RFC3339))
	}
	v, err, _ := p.manifestFlight.Do("head:"+q.cacheRepo+":"+q.tag, func() (any, error) {
		hctx, cancel := p.upstreamCtx(context.WithoutCancel(ctx), q.host)
		defer cancel()
		reg, err := p.upstream(q.host)
		if err != nil {
			return nil, err
		}
		head, err := reg.HeadManifest(hctx, q.repo, q.tag, nil)
		if err != nil {
			return nil, err
		}
		if head.Digest == "" {
			// No digest header: only a GET can tell.
			return p.fetchManifest(hctx, q, q.tag)
		}
		if head.Digest != local.Digest {
			p.log.Info("tag moved upstream", "repo", q.cacheRepo, "tag", q.tag, "from", local.Digest, "to", head.Digest)
			return p.fetchManifest(hctx, q, q.tag)
		}
		now := p.now()
		if err := p.store.TouchTag(hctx, q.cacheRepo, q.tag, now); err != nil {
			return nil, err
		}
		p.mem.putTag(q.cacheRepo, q.tag, storage.Tag{Digest: local.Digest, FetchedAt: now})
		return nil, nil
	})
	if err != nil {
		return nil, err
	}
	if m, ok := v.(*resolvedManifest); ok && m != nil {
		return m, nil
	}
	p.m.hits.WithLabelValues("tag").Inc()
	return p.localManifest(ctx, q, local)
}

// downWindow is how long a failed upstream is not asked to revalidate
// stale tags (unless it asked for longer with Retry-After).
const downWindow = 10 * time.Second

// downHosts remembers upstreams that just failed, so that revalidations in
// the next seconds serve stale at once.
type downHosts struct {
	mu    sync.Mutex
	until map[string]time.Time
}

func (d *downHosts) mark(host string, now time.Time, err error) {
	wait := downWindow
	if ra, ok := upstream.RetryAfter(err); ok && ra > wait {
		wait = min(ra, 5*time.Minute)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.until == nil {
		d.until = map[string]time.Time{}
	}
	d.until[host] = now.Add(wait)
}

func (d *downHosts) check(host string, now time.Time) (time.Time, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	until, ok := d.until[host]
	if ok && !now.Before(until) {
		delete(d.until, host)
		return time.Time{}, false
	}
	return until, ok
}
