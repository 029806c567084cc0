package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/opencontainers/go-digest"

	"github.com/stowage/stowage/proxy/internal/fill"
	"github.com/stowage/stowage/proxy/internal/peer"
	"github.com/stowage/stowage/upstream"
)

// Coordinator arbitrates blob fills between processes that share one
// storage backend, so that a cluster downloads each blob once. Without one,
// a process coordinates only with itself (the fill registry) and stays
// correct: several replicas may then download the same blob, and the
// commits are atomic and identical.
type Coordinator interface {
	// TryAcquire tries to become the one downloader of key. When acquired
	// is true the lease is held (and kept alive) until release is called.
	// When false, another process holds it.
	TryAcquire(ctx context.Context, key string) (release func(), acquired bool, err error)
	// Held reports whether any process holds key.
	Held(ctx context.Context, key string) (bool, error)
}

// WithCoordinator sets the cluster-wide fill coordinator (e.g. Redis
// leases).
func WithCoordinator(c Coordinator) Option { return func(o *options) { o.coord = c } }

// leasePoll is how often a waiting replica checks for the owner's commit.
const leasePoll = 100 * time.Millisecond

// maxLeaseWait bounds how long a replica waits for another one's fill.
const maxLeaseWait = 30 * time.Minute

// peerRetry is how long a replica waits before it asks an owner that could
// not stream again (meanwhile it polls for the commit).
const peerRetry = time.Second

// freshOwnerWait and freshOwnerTries bound how an owner seen for the first
// time is asked again when it answers that it runs no fill for the blob
// (yet): it may have taken the lease an instant ago and not yet made its
// fill streamable. Five asks over 20+40+80+160 ms, instead of peerRetry.
const (
	freshOwnerWait  = 20 * time.Millisecond
	freshOwnerTries = 5
)

// errCommittedMeanwhile: the blob was committed while a fresh owner was
// asked again.
var errCommittedMeanwhile = errors.New("committed while asking its owner")

// askFresh calls ask, and again after short waits (freshOwnerWait,
// doubling; at most freshOwnerTries calls) while the owner answers that it
// has no stream: a replica that has just taken the lease has one a moment
// later. Any other outcome ends it at once.
func askFresh(ctx context.Context, ask func() error) error {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval, b.Multiplier, b.RandomizationFactor = freshOwnerWait, 2, 0
	_, err := backoff.Retry(ctx, func() (struct{}, error) {
		err := ask()
		if err != nil && !errors.Is(err, peer.ErrNoStream) {
			return struct{}{}, backoff.Permanent(err)
		}
		return struct{}{}, err
	}, backoff.WithBackOff(b), backoff.WithMaxTries(freshOwnerTries))
	return err
}

// fillKey is a blob's lease key.
func fillKey(d digest.Digest) string { return "fill:" + d.String() }

// acquireFill returns a release function when this process should download
// f's blob (resuming from what sg already holds), or done=true when another
// process committed it meanwhile: then f holds the verified blob when it had
// streamed part of it from that process, else f published nothing and the
// caller sends its readers to the store. A coordinator failure falls back to
// downloading locally (correct, if not deduplicated), with a log line.
func (p *Proxy) acquireFill(ctx context.Context, f *fill.Fill, sg *staged, cacheRepo string) (release func(), done bool, err error) {
	if p.coord == nil {
		return func() {}, false, nil
	}
	d := f.Digest()
	key := fillKey(d)
	deadline := time.Now().Add(maxLeaseWait)
	for time.Now().Before(deadline) {
		rel, ok, err := p.coord.TryAcquire(ctx, key)
		if err != nil {
			p.log.Warn("fill coordinator unavailable; downloading without a cluster lease", "digest", d, "err", err)
			return func() {}, false, nil
		}
		if ok {
			// Streamable to other replicas from the moment the lease
			// names this one: a replica that reads the lease asks at once,
			// and one told "no running fill" asks again only after
			// peerRetry (before, the store check below, a round trip on
			// S3, left a window where the owner had no fill to stream).
			unown := p.peer.owned(f)
			if p.health.draining.Load() {
				// Shutting down: following another replica's fill is
				// fine, starting a download under this replica's name
				// is not.
				unown()
				rel()
				return nil, false, errDraining
			}
			// The owner may have committed between our look-up and now.
			if _, serr := p.store.StatBlob(ctx, d); serr == nil {
				unown()
				rel()
				return nil, true, p.finishFromStore(ctx, f, sg, cacheRepo)
			}
			f.SetOwner("")
			return func() { unown(); rel() }, false, nil
		}
		sg.sawOwner = true
		if done, err := p.waitOwner(ctx, f, sg, key, cacheRepo, deadline); done || err != nil {
			return nil, done, err
		}
	}
	return nil, false, fmt.Errorf("%w: waited %s for %s", fill.ErrLeaseTimeout, maxLeaseWait, d)
}

// waitOwner follows another replica's fill of f's blob: it streams the
// owner's bytes into f while the owner downloads (peer streaming), and
// otherwise polls for its commit. It returns done once the blob is
// committed (and f verified when it published bytes), or false when the
// lease ended without a commit: the caller then tries to take over. An
// owner that cannot stream is asked again at most every peerRetry; a new
// owner at once, and when it answers that it runs no fill (yet) a few more
// times within 300 ms (askFresh): it may have taken the lease an instant
// before it could stream.
func (p *Proxy) waitOwner(ctx context.Context, f *fill.Fill, sg *staged, key, cacheRepo string, deadline time.Time) (bool, error) {
	d := f.Digest()
	var (
		fl        *peer.Follower
		following string // lease value of the owner fl follows
		nextTry   time.Time
		warned    bool // the owner's failure to stream was logged
	)
	for time.Now().Before(deadline) {
		if _, serr := p.store.StatBlob(ctx, d); serr == nil {
			return true, p.finishFromStore(ctx, f, sg, cacheRepo)
		}
		id, url := p.leaseOwner(ctx, key)
		if id != "" {
			f.SetOwner(id) // shown in the fills list
		}
		if url != "" && (id+" "+url != following || time.Now().After(nextTry)) {
			fresh := id+" "+url != following
			if fresh {
				following, warned = id+" "+url, false
				fl = &peer.Follower{Src: &httpSource{pr: p.peer, url: url, d: d}, Sink: &fillSink{p: p, f: f, sg: sg},
					Opts: peer.Options{Retries: 3, Backoff: 100 * time.Millisecond, Restarts: 3, Stall: p.peer.stall}}
			}
			if err := p.confirmOwn(ctx, f, sg, cacheRepo); err != nil {
				return false, err
			}
			asks := 0
			ask := func() error {
				if asks++; asks > 1 {
					if _, serr := p.store.StatBlob(ctx, d); serr == nil {
						return errCommittedMeanwhile
					}
				}
				return p.followPeer(ctx, f, sg, fl, cacheRepo)
			}
			var err error
			if fresh {
				// It may have taken the lease an instant ago: ask again
				// soon rather than after peerRetry.
				err = askFresh(ctx, ask)
			} else {
				err = ask()
			}
			// One outcome per stream of the fill, however many asks a
			// fresh owner took.
			if !errors.Is(err, errCommittedMeanwhile) {
				p.peer.streams.WithLabelValues(streamOutcome(err)).Inc()
			}
			switch {
			case err == nil:
				return true, nil
			case errors.Is(err, errCommittedMeanwhile):
				continue
			case errors.Is(err, peer.ErrOwnerGone):
				level := slog.LevelDebug // logged once per owner, retried every peerRetry
				if !warned {
					level, warned = slog.LevelInfo, true
				}
				p.log.Log(ctx, level, "cannot stream the fill from its owner; waiting for its commit", "digest", d, "owner", url, "err", err)
				nextTry = time.Now().Add(peerRetry)
				continue
			case errors.Is(err, peer.ErrOwnerFailed):
				return false, fmt.Errorf("%w: the replica downloading %s found the upstream's bytes wrong", upstream.ErrDigestMismatch, d)
			default:
				return false, err
			}
		}
		held, herr := p.coord.Held(ctx, key)
		if herr != nil || !held {
			return false, nil
		}
		select {
		case <-time.After(leasePoll):
		case <-ctx.Done():
			return false, context.Cause(ctx) // cancelled, closed or past max_duration
		}
	}
	return false, nil
}

// leaseOwner returns the id and internal URL of key's owner when peer
// streaming is on ("" otherwise, or on any error: then the replica polls).
func (p *Proxy) leaseOwner(ctx context.Context, key string) (id, url string) {
	if p.peer == nil || p.peer.owners == nil {
		return "", ""
	}
	id, url, err := p.peer.owners.LeaseOwner(ctx, key)
	if err != nil {
		return "", ""
	}
	return id, url
}

func streamOutcome(err error) string {
	switch {
	case err == nil:
		return "complete"
	case errors.Is(err, peer.ErrOwnerGone):
		return "owner_gone"
	default:
		return "failed"
	}
}
