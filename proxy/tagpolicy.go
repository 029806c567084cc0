package proxy

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/stowage/stowage/storage"
	"github.com/stowage/stowage/upstream"
)

// manifestByTag applies the tag policy: a fresh tag is served locally; a
// stale one is revalidated with an upstream HEAD (same digest: refresh the
// time; new digest or no digest header: GET it); when the upstream fails,
// the disk is read again and the stale copy is served within max_stale,
// logged and counted.
func (p *Proxy) manifestByTag(ctx context.Context, q *request) (*resolvedManifest, error) {
	local, err := p.localTag(ctx, q)
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		return nil, err
	}
	if err != nil {
		p.m.misses.WithLabelValues("tag").Inc()
		return p.fetchManifest(ctx, q, q.tag)
	}
	if p.tagFresh(local) {
		p.m.hits.WithLabelValues("tag").Inc()
		return p.localManifest(ctx, q, local)
	}
	// Another replica may have confirmed (or moved) the tag since this
	// one read it: one HEAD per tag per TTL serves the whole cluster.
	shared, fresh := p.sharedTag(ctx, q, local)
	if fresh {
		p.m.hits.WithLabelValues("tag").Inc()
		return p.localManifest(ctx, q, shared)
	}
	local = shared
	m, err := p.revalidateTag(ctx, q, local)
	if err == nil {
		return m, nil
	}
	if upstreamRefused(err) {
		// The registry itself answered: the tag is gone or forbidden.
		// Serving the old copy would hide a deliberate change.
		return nil, err
	}
	if !errors.Is(err, errRecentlyDown) {
		p.down.mark(q.host, p.now(), err)
	}
	// Another process (an import, a prefetch, a replica) may have written
	// the tag since it was read: the disk, not memory, decides what is
	// served stale.
	if disk, derr := p.store.GetTag(ctx, q.cacheRepo, q.tag); derr == nil {
		p.mem.putTag(q.cacheRepo, q.tag, disk, p.now())
		local = disk
		if p.tagFresh(local) {
			p.m.hits.WithLabelValues("tag").Inc()
			return p.localManifest(ctx, q, local)
		}
	}
	age := p.now().Sub(local.FetchedAt)
	if max := p.cfg.Cache.MaxStale; max > 0 && !local.TimeUnreadable && age > p.cfg.Cache.TagTTL+max {
		return nil, fmt.Errorf("tag stale beyond max_stale (%s): %w", max, err)
	}
	p.m.staleServes.WithLabelValues(q.host).Inc()
	p.recordStaleServe(q, local, err)
	ageAttr := "unknown (unreadable time record)"
	if !local.TimeUnreadable {
		p.m.manifest.staleAge.WithLabelValues(q.host).Observe(age.Seconds())
		ageAttr = age.Round(time.Second).String()
	}
	p.log.Warn("upstream failed; serving stale tag", "repo", q.cacheRepo, "tag", q.tag,
		"digest", local.Digest, "age", ageAttr, "err", err)
	return p.localManifest(ctx, q, local)
}

// tagClockSkew is how far ahead of this replica's clock a tag's time
// record may be and still count: replicas' clocks differ a little.
const tagClockSkew = time.Minute

// tagFresh: younger than the TTL, or written by something other than
// Stowage (a stock registry on the same root: no time record at all), which
// has nothing to revalidate against. A tag whose time record exists but
// cannot be read is stale, and so is one whose time lies more than
// tagClockSkew ahead (written by a replica whose clock ran fast, or before
// the clock was set back): it would otherwise stay fresh, never asked
// about, until that time plus the TTL.
func (p *Proxy) tagFresh(t storage.Tag) bool {
	if t.TimeUnreadable {
		return false
	}
	if t.FetchedAt.IsZero() {
		return true
	}
	age := p.now().Sub(t.FetchedAt)
	return age >= -tagClockSkew && age < p.cfg.Cache.TagTTL
}

// upstreamRefused reports whether err is the registry's own refusal (the
// tag or repository does not exist, or access is denied), which must not
// be papered over with a stale copy. A forward proxy's 407 and anything
// temporary are not the registry's word.
func upstreamRefused(err error) bool {
	if upstream.Temporary(err) {
		return false
	}
	var se *upstream.StatusError
	if errors.As(err, &se) && se.Status == http.StatusProxyAuthRequired {
		return false
	}
	return errors.Is(err, upstream.ErrNotFound) || errors.Is(err, upstream.ErrDenied) ||
		errors.Is(err, upstream.ErrUnauthorized)
}

// localTag resolves a tag from memory when it was read from disk moments
// ago (tagMemoryLifetime), else from disk.
func (p *Proxy) localTag(ctx context.Context, q *request) (storage.Tag, error) {
	now := p.now()
	if t, ok := p.mem.tag(q.cacheRepo, q.tag, now); ok {
		return t, nil
	}
	t, err := p.store.GetTag(ctx, q.cacheRepo, q.tag)
	if err != nil {
		return storage.Tag{}, err
	}
	p.mem.putTag(q.cacheRepo, q.tag, t, now)
	return t, nil
}

func (p *Proxy) localManifest(ctx context.Context, q *request, t storage.Tag) (*resolvedManifest, error) {
	dq := *q
	dq.dgst, dq.tag = t.Digest, ""
	return p.manifestByDigest(ctx, &dq)
}

// errRecentlyDown: the revalidation was skipped because the upstream is in
// its down window (it wraps ErrUnavailable, so a stale copy is served).
var errRecentlyDown = fmt.Errorf("%w: upstream failed recently", upstream.ErrUnavailable)

// revalidateTag asks the upstream what the tag points at now.
func (p *Proxy) revalidateTag(ctx context.Context, q *request, local storage.Tag) (*resolvedManifest, error) {
	if until, down := p.down.check(q.host, p.now()); down {
		// The upstream failed moments ago: serve stale now instead of
		// making every client wait through the retries again.
		return nil, fmt.Errorf("%w: %s; next try after %s", errRecentlyDown, q.host, until.Format(time.RFC3339))
	}
	v, err, _ := p.manifestFlight.Do("head:"+q.cacheRepo+":"+q.tag, func() (any, error) {
		hctx, cancel := p.upstreamCtx(context.WithoutCancel(ctx), q.host)
		defer cancel()
		reg, err := p.upstream(q.host)
		if err != nil {
			return nil, err
		}
		// One replica of the cluster asks; the others take its answer.
		release, shared, done := p.tagCheck(hctx, q, local)
		if done {
			return shared, nil
		}
		defer release()
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
		p.down.ok(q.host)
		now := p.now()
		if err := p.store.TouchTag(hctx, q.cacheRepo, q.tag, local.Digest, now); err != nil {
			// The upstream confirmed the digest; only the record failed.
			p.mem.forgetTag(q.cacheRepo, q.tag)
			p.storeFailed("tag", q, q.tag, err)
			return nil, nil
		}
		p.mem.putTag(q.cacheRepo, q.tag, storage.Tag{Digest: local.Digest, FetchedAt: now}, now)
		p.tagConfirmed(hctx, q.cacheRepo, q.tag, local.Digest, now, false)
		return nil, nil
	})
	if err != nil {
		return nil, err
	}
	if m, ok := v.(*resolvedManifest); ok && m != nil {
		return m, nil
	}
	if t, ok := v.(storage.Tag); ok {
		p.m.hits.WithLabelValues("tag").Inc()
		return p.localManifest(ctx, q, t)
	}
	p.m.hits.WithLabelValues("tag").Inc()
	return p.localManifest(ctx, q, local)
}

// The down window: how long a failed upstream is not asked to revalidate
// stale tags. It starts at downWindow and doubles with every further
// failure up to maxDownWindow (a black-holed upstream then costs one
// timeout per five minutes, not one per ten seconds); any success resets
// it. A longer Retry-After is honoured up to maxDownWindow.
const (
	downWindow    = 10 * time.Second
	maxDownWindow = 5 * time.Minute
)

// downHosts remembers upstreams that just failed, so that revalidations in
// the next seconds serve stale at once.
type downHosts struct {
	mu    sync.Mutex
	hosts map[string]downState
}

type downState struct {
	until    time.Time
	failures int // consecutive failures since the last success
	lastErr  string
	lastAt   time.Time
}

func (d *downHosts) mark(host string, now time.Time, err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.hosts == nil {
		d.hosts = map[string]downState{}
	}
	s := d.hosts[host]
	s.failures++
	wait := maxDownWindow
	if s.failures <= 6 { // 10 s << 5 = 320 s is past the cap already
		wait = min(downWindow<<(s.failures-1), maxDownWindow)
	}
	if ra, ok := upstream.RetryAfter(err); ok && ra > wait {
		wait = min(ra, maxDownWindow)
	}
	s.until = now.Add(wait)
	if err != nil {
		s.lastErr, s.lastAt = err.Error(), now
	}
	d.hosts[host] = s
}

// ok resets host's window after a successful answer.
func (d *downHosts) ok(host string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.hosts, host)
}

func (d *downHosts) check(host string, now time.Time) (time.Time, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	s, ok := d.hosts[host]
	if !ok || !now.Before(s.until) {
		return time.Time{}, false
	}
	return s.until, true
}
