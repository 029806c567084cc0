package proxy

import (
	"context"
	"errors"
	"fmt"
	"hash"
	"io"
	"math/rand/v2"
	"time"

	"github.com/stowage/stowage/config"
	"github.com/stowage/stowage/storage"
	"github.com/stowage/stowage/upstream"
)

// chunkSize is the copy buffer of one fill.
const chunkSize = 256 << 10

// runFill downloads f's blob into its staging file while hashing, resumes
// with a Range request after temporary failures, and commits the blob once
// its size and digest check out.
func (p *Proxy) runFill(ctx context.Context, f *fill) error {
	if done, err := p.alreadyCommitted(ctx, f); done || err != nil {
		return err
	}
	release, waited, err := p.acquireFill(ctx, f.dgst)
	if err != nil {
		return err
	}
	if waited {
		_, err := p.alreadyCommitted(ctx, f)
		return err
	}
	defer release()
	reg, err := p.upstream(f.host)
	if err != nil {
		return err
	}
	ucfg, _ := p.cfg.Upstream(f.host)
	h := f.dgst.Algorithm().Hash()
	buf := make([]byte, chunkSize)
	failures := 0
	for {
		progressed, err := p.fillAttempt(ctx, reg, f, &h, buf)
		if err == nil {
			break
		}
		if progressed {
			failures = 0
		}
		failures++
		if !upstream.Temporary(err) || errors.Is(err, upstream.ErrCertificate) ||
			failures >= ucfg.Retry.Attempts || ctx.Err() != nil {
			return err
		}
		wait := backoff(ucfg.Retry, failures, err)
		p.log.Info("blob fill interrupted; resuming", "digest", f.dgst, "upstream", f.host,
			"offset", f.written, "attempt", failures, "wait", wait, "err", err)
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return errors.Join(errFillClosed, ctx.Err())
		}
	}
	return p.commitFill(ctx, f, h)
}

// alreadyCommitted handles a blob committed by someone else (another
// process on the same storage) between the client's look-up and this fill:
// readers are sent to the store.
func (p *Proxy) alreadyCommitted(ctx context.Context, f *fill) (bool, error) {
	info, err := p.store.StatBlob(ctx, f.dgst)
	if errors.Is(err, storage.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	f.mu.Lock()
	f.size, f.cached = info.Size, true
	f.mu.Unlock()
	return true, p.store.LinkBlob(ctx, f.cacheRepo, f.dgst)
}

// fillAttempt runs one upstream request: from f.written onwards, or from
// zero when the server ignores Range. It returns whether any byte arrived.
func (p *Proxy) fillAttempt(ctx context.Context, reg upstream.Registry, f *fill, h *hash.Hash, buf []byte) (bool, error) {
	b, err := reg.GetBlob(ctx, f.repo, f.dgst, f.written)
	if err != nil {
		return false, err
	}
	defer b.Body.Close()
	if b.Offset != f.written {
		if b.Offset != 0 {
			return false, fmt.Errorf("%w: upstream resumed at %d, want %d", upstream.ErrInvalid, b.Offset, f.written)
		}
		// The server ignored Range: start over.
		if err := p.restartFill(f); err != nil {
			return false, err
		}
		*h = f.dgst.Algorithm().Hash()
	}
	if b.Size >= 0 {
		f.mu.Lock()
		if f.size >= 0 && f.size != b.Size {
			f.mu.Unlock()
			return false, fmt.Errorf("%w: blob size changed from %d to %d", upstream.ErrDigestMismatch, f.size, b.Size)
		}
		if f.size < 0 {
			f.size = b.Size
			f.broadcastLocked()
		}
		f.mu.Unlock()
	}
	progressed := false
	counter := p.m.upstreamBytes.WithLabelValues(f.host)
	for {
		n, rerr := b.Body.Read(buf)
		if n > 0 {
			if f.size >= 0 && f.written+int64(n) > f.size {
				return true, fmt.Errorf("%w: upstream sent more than %d bytes", upstream.ErrDigestMismatch, f.size)
			}
			if _, err := f.st.File.Write(buf[:n]); err != nil {
				return progressed, fmt.Errorf("write staging file: %w", err)
			}
			(*h).Write(buf[:n])
			progressed = true
			counter.Add(float64(n))
			f.mu.Lock()
			f.written += int64(n)
			f.broadcastLocked()
			f.mu.Unlock()
		}
		if errors.Is(rerr, io.EOF) {
			if f.size >= 0 && f.written < f.size {
				return progressed, fmt.Errorf("%w: body ended at %d of %d bytes", upstream.ErrUnavailable, f.written, f.size)
			}
			return progressed, nil
		}
		if rerr != nil {
			if ctx.Err() != nil {
				return progressed, errors.Join(errFillClosed, rerr)
			}
			if !errors.Is(rerr, upstream.ErrUnavailable) {
				rerr = fmt.Errorf("%w: %w", upstream.ErrUnavailable, rerr)
			}
			return progressed, rerr
		}
	}
}

func (p *Proxy) restartFill(f *fill) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.st.File.Truncate(0); err != nil {
		return err
	}
	if _, err := f.st.File.Seek(0, io.SeekStart); err != nil {
		return err
	}
	f.written = 0
	f.broadcastLocked()
	return nil
}

// commitFill checks size and digest, syncs, and commits atomically.
func (p *Proxy) commitFill(ctx context.Context, f *fill, h hash.Hash) error {
	f.mu.Lock()
	size, written := f.size, f.written
	if size < 0 {
		f.size = written
	}
	f.mu.Unlock()
	if size >= 0 && written != size {
		return fmt.Errorf("%w: got %d bytes, want %d", upstream.ErrDigestMismatch, written, size)
	}
	if got := fmt.Sprintf("%s:%x", f.dgst.Algorithm(), h.Sum(nil)); got != f.dgst.String() {
		return fmt.Errorf("%w: upstream bytes hash to %s, want %s", upstream.ErrDigestMismatch, got, f.dgst)
	}
	// Verified: whatever happens to the commit, the readers may have every
	// byte once the fill is done (the last byte is released then).
	f.mu.Lock()
	f.verified = true
	f.mu.Unlock()
	if err := f.st.File.Sync(); err != nil {
		return fmt.Errorf("sync staging file: %w", err)
	}
	if err := p.store.CommitBlob(ctx, f.dgst, f.st); err != nil {
		return err
	}
	if err := p.store.LinkBlob(ctx, f.cacheRepo, f.dgst); err != nil {
		p.log.Warn("link blob", "repo", f.cacheRepo, "digest", f.dgst, "err", err)
	}
	p.log.Info("blob committed", "digest", f.dgst, "upstream", f.host, "repo", f.repo, "bytes", written)
	return nil
}

// backoff is the wait before retry number n (1-based): exponential with
// full jitter, capped, or the upstream's Retry-After when it asked for one.
func backoff(r config.Retry, n int, err error) time.Duration {
	if ra, ok := upstream.RetryAfter(err); ok {
		return min(ra, r.MaxBackoff)
	}
	d := r.InitialBackoff << min(n-1, 16)
	if d <= 0 || d > r.MaxBackoff {
		d = r.MaxBackoff
	}
	return d/2 + rand.N(d/2+1)
}
