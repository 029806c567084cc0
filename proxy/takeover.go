package proxy

import (
	"context"
	"errors"
	"fmt"

	"github.com/stowage/stowage/proxy/internal/fill"
	"github.com/stowage/stowage/proxy/internal/takeover"
)

// errDraining refuses a new lease on a replica that is shutting down: its
// fill would be cut at the shutdown deadline and the lease would name a
// replica that is going away. Its clients get 503 and retry elsewhere.
var errDraining = fmt.Errorf("%w: draining, this replica takes no new fill", fill.ErrClosed)

// adoptSink is takeover.Sink over a local fill: adopted bytes are written
// and hashed like downloaded ones.
type adoptSink struct {
	f  *fill.Fill
	sg *staged
}

func (s adoptSink) Progress() (int64, int64)                { return s.f.Progress() }
func (s adoptSink) ReadAt(p []byte, off int64) (int, error) { return s.f.ReadAt(p, off) }
func (s adoptSink) Append(p []byte) error {
	if err := s.f.Append(p); err != nil {
		return fmt.Errorf("write staging file: %w", err)
	}
	s.sg.h.Write(p)
	return nil
}

// adoptOrphan resumes f, which this process is about to download, from the
// staging file a dead process left for the same blob on a shared
// filesystem (an owner that died mid-download): its bytes past what f
// already holds are appended, and the download continues after them. It
// returns the bytes adopted. Nothing is adopted from a live process, and a
// failure here only costs the bytes (logged): the download goes on from
// what f holds.
func (p *Proxy) adoptOrphan(ctx context.Context, f *fill.Fill, sg *staged) int64 {
	o, err := p.store.Orphan(f.Digest())
	if err != nil {
		p.log.Warn("looking for a dead owner's staged bytes", "digest", f.Digest(), "err", err)
		return 0
	}
	if o == nil {
		return 0
	}
	size, have := f.Progress()
	if v := takeover.Decide(size, have, o.Size); v != takeover.Adopt {
		p.log.Info("not adopting a dead owner's staged bytes", "digest", f.Digest(), "staged", o.Size, "have", have, "why", v.String())
		if err := o.Close(); err != nil {
			p.log.Warn("close a dead owner's staging file", "err", err)
		}
		return 0
	}
	if _, err := sg.ensure(p.store, f); err != nil {
		_ = o.Close()
		p.log.Warn("staging file for a takeover", "digest", f.Digest(), "err", err)
		return 0
	}
	n, err := takeover.AdoptFrom(ctx, o.File, o.Size, adoptSink{f: f, sg: sg}, make([]byte, chunkSize))
	switch {
	case errors.Is(err, takeover.ErrDiverged):
		p.log.Info("not adopting a dead owner's staged bytes", "digest", f.Digest(), "staged", o.Size, "have", have, "why", err)
	case err != nil:
		p.log.Warn("adopting a dead owner's staged bytes", "digest", f.Digest(), "adopted", n, "err", err)
	default:
		p.log.Info("taking over a dead owner's fill from its staged bytes", "digest", f.Digest(), "had", have, "adopted", n)
	}
	if n > 0 {
		err = o.Remove() // ours now
	} else {
		err = o.Close()
	}
	if err != nil {
		p.log.Warn("release a dead owner's staging file", "digest", f.Digest(), "err", err)
	}
	return n
}

// handOver leaves the staged bytes of a fill that this process cut at
// shutdown (Proxy.Close after server.shutdown_timeout: the fill's cause is
// fill.ErrClosed) for the replica that takes the fill over, as a SIGKILL
// would have left them: synced, in a staging directory whose lock is free,
// where that replica adopts them (adoptOrphan) and start-up cleanup
// removes them if nobody does. Any other end (commit, failure, a client's
// cancel) leaves them to discard. The caller calls it before the fill's
// lease is released, so that a taker that sees the lease gone finds the
// file. The taker's digest check decides, as for every inherited byte.
func (p *Proxy) handOver(ctx context.Context, f *fill.Fill, sg *staged) {
	if sg.st == nil || sg.committed || sg.handedOver || ctx.Err() == nil || !errors.Is(context.Cause(ctx), fill.ErrClosed) {
		return
	}
	_, written := f.Progress()
	ok, err := p.store.HandOver(sg.st, written)
	switch {
	case err != nil:
		p.log.Warn("leaving a cut fill's staged bytes for a taker", "digest", f.Digest(), "bytes", written, "err", err)
	case ok:
		sg.handedOver = true
		p.log.Info("fill cut at shutdown; its staged bytes are left for the replica that takes it over", "digest", f.Digest(), "bytes", written)
	}
}
