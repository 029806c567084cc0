package proxy

import (
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"time"

	"github.com/opencontainers/go-digest"
)

// Background integrity checks of cache hits (cache.verify_sample): a blob
// served from the cache is re-hashed after its response, off the hit path;
// a blob whose bytes no longer match its digest (a flipped bit on disk) is
// removed with its repository links, so it is never served again and the
// next pull fetches it from the upstream.
const (
	// maxIntegrityChecks bounds the checks running at once; a sampled
	// hit beyond it is skipped (counted as such).
	maxIntegrityChecks = 2
	// integrityTimeout bounds one check.
	integrityTimeout = 10 * time.Minute
)

// sampleIntegrity starts a background check of d when the hit is sampled.
func (p *Proxy) sampleIntegrity(d digest.Digest) {
	share := p.cfg.Cache.VerifySample
	if share <= 0 || (share < 1 && rand.Float64() >= share) { //nolint:gosec // sampling, not security
		return
	}
	h := &p.health
	if h.checking.Add(1) > maxIntegrityChecks {
		h.checking.Add(-1)
		p.m.integrityChecks.WithLabelValues("skipped").Inc()
		return
	}
	started := h.goCheck(func(base context.Context) {
		defer h.checking.Add(-1)
		ctx, cancel := context.WithTimeout(base, integrityTimeout)
		defer cancel()
		p.checkBlob(ctx, d)
	})
	if !started {
		h.checking.Add(-1)
	}
}

// checkBlob re-hashes a committed blob and removes it when corrupt.
func (p *Proxy) checkBlob(ctx context.Context, d digest.Digest) {
	err := p.verifyStoredBlob(ctx, d)
	switch {
	case err == nil:
		p.m.integrityChecks.WithLabelValues("ok").Inc()
		return
	case ctx.Err() != nil:
		return // the proxy is closing
	case !errors.Is(err, errCorrupt):
		p.m.integrityChecks.WithLabelValues("error").Inc()
		p.log.Warn("integrity check failed to read blob", "digest", d, "err", err)
		return
	}
	p.log.Error("cached blob is corrupt; removing it, the next pull fetches it again", "digest", d, "err", err)
	if err := p.removeCorrupt(ctx, d); err != nil {
		p.log.Error("cannot remove corrupt blob", "digest", d, "err", err)
	}
	p.m.integrityChecks.WithLabelValues("corrupt").Inc() // counted once removed
}

// errCorrupt marks a blob whose stored bytes do not match its digest.
var errCorrupt = errors.New("stored blob does not match its digest")

// verifyStoredBlob hashes the committed bytes of d.
func (p *Proxy) verifyStoredBlob(ctx context.Context, d digest.Digest) error {
	rs, _, err := p.store.OpenBlob(ctx, d)
	if err != nil {
		return err
	}
	defer rs.Close()
	v := d.Verifier()
	if _, err := io.Copy(v, readerCtx{ctx, rs}); err != nil {
		return err
	}
	if !v.Verified() {
		return errCorrupt
	}
	return nil
}

// removeCorrupt deletes a blob and the _layers links to it in every
// repository, and tells the usage index.
func (p *Proxy) removeCorrupt(ctx context.Context, d digest.Digest) error {
	repos, err := p.store.LinkedRepositories(ctx)
	if err != nil {
		return err
	}
	if _, err := p.store.RemoveBlob(ctx, d, repos); err != nil {
		return err
	}
	p.cacheHooks().Removed(d)
	return nil
}

// readerCtx stops a long read when ctx ends.
type readerCtx struct {
	ctx context.Context
	r   io.Reader
}

func (r readerCtx) Read(b []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	return r.r.Read(b)
}
