package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash"
	"io"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/stowage/stowage/config"
	"github.com/stowage/stowage/proxy/internal/fill"
	"github.com/stowage/stowage/proxy/internal/takeover"
	"github.com/stowage/stowage/storage"
	"github.com/stowage/stowage/upstream"
)

// chunkSize is the copy buffer of one fill.
const chunkSize = 256 << 10

// downloadSlack is added to a fill's byte budget (max_download_factor x
// size).
const downloadSlack = 1 << 20

// runFill makes f's blob committed: it finds it already committed (by
// another process), waits for another replica's fill, or downloads it. The
// fill is bounded by cache.fill.max_duration.
func (p *Proxy) runFill(ctx context.Context, f *fill.Fill, cacheRepo string) error {
	fc := p.cfg.Cache.Fill
	ctx, cancel := context.WithTimeoutCause(ctx, fc.MaxDuration,
		fmt.Errorf("%w: running longer than cache.fill.max_duration (%s)", fill.ErrBudget, fc.MaxDuration))
	defer cancel()
	// A blob another replica committed can vanish again before we look;
	// then this process downloads it. Bounded: three rounds.
	sg := &staged{}
	defer func() {
		p.handOver(ctx, f, sg) // a follower cut at shutdown: its streamed bytes
		sg.discard(p.log, f)
	}()
	for range 3 {
		if size, _ := f.Progress(); size < 0 {
			if cached, err := p.alreadyCommitted(ctx, f); cached || err != nil {
				return err
			}
		}
		release, done, err := p.acquireFill(ctx, f, sg, cacheRepo)
		if err != nil {
			return err
		}
		if done {
			if size, _ := f.Progress(); size >= 0 {
				return nil // streamed from the owner, verified, committed
			}
			continue
		}
		// A dead owner may have staged more than this fill streamed from
		// it (or this fill never streamed): resume from there.
		_, streamed := f.Progress()
		adopted := p.adoptOrphan(ctx, f, sg)
		if sg.sawOwner || adopted > 0 {
			sg.takeover = true
			p.m.takeover.note(streamed, adopted)
		}
		err = p.download(ctx, f, cacheRepo, sg)
		// Cut at shutdown: the staged bytes are left for the replica
		// that takes over, before the lease tells it to.
		p.handOver(ctx, f, sg)
		release()
		return err
	}
	return fmt.Errorf("%w: %s was committed by another replica but is not in the store", storage.ErrNotFound, f.Digest())
}

// alreadyCommitted handles a blob committed by someone else between the
// client's look-up and this fill: readers are sent to the store. No size is
// published, so no reader opens the empty staging file. No repository is
// linked here: nothing was downloaded through the fill's repository, so
// each joiner authorises its own as a cache hit does.
func (p *Proxy) alreadyCommitted(ctx context.Context, f *fill.Fill) (bool, error) {
	_, err := p.store.StatBlob(ctx, f.Digest())
	if errors.Is(err, storage.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	f.MarkCached()
	return true, nil
}

// download is one fill's transfer: staging file, attempts with resume,
// verification and commit.
type download struct {
	h       hash.Hash
	buf     []byte
	total   int64              // bytes received over every attempt
	budget  int64              // bound of total once the size is known (-1: none yet)
	counter prometheus.Counter // stowage_upstream_bytes_total of the host
	// takeover counts the bytes too when the fill took over from another
	// owner (stowage_fill_takeover_downloaded_bytes_total); nil otherwise.
	takeover prometheus.Counter
	// headSize is the upstream's HEAD answer for a blob whose GET came
	// without a length (-1: unknown); headAsked: the HEAD was sent.
	headSize  int64
	headAsked bool
	// inherited is what the fill held before this download's first
	// request (streamed from another replica, adopted from a dead owner's
	// staging): unverified bytes of someone else's download.
	// restartedInherited: the download already restarted from zero once
	// because the whole did not match (takeover.OnMismatch).
	inherited          int64
	restartedInherited bool
}

// received counts n bytes from the upstream against the fill's budget
// (cache.fill.max_download_factor x size + 1 MiB).
func (dl *download) received(n int) error {
	dl.total += int64(n)
	dl.counter.Add(float64(n))
	if dl.takeover != nil {
		dl.takeover.Add(float64(n))
	}
	if dl.budget >= 0 && dl.total > dl.budget {
		return fmt.Errorf("%w: downloaded %d bytes, more than cache.fill.max_download_factor allows (%d)", fill.ErrBudget, dl.total, dl.budget)
	}
	return nil
}

// download runs attempts until the blob is complete, resuming with a Range
// request after temporary failures, within the fill's bounds, and commits.
// sg may already hold bytes streamed from another replica: the download
// resumes after them.
func (p *Proxy) download(ctx context.Context, f *fill.Fill, cacheRepo string, sg *staged) (err error) {
	st, err := sg.ensure(p.store, f)
	if err != nil {
		return err
	}
	reg, err := p.upstream(f.Host())
	if err != nil {
		return err
	}
	ucfg, _ := p.cfg.Upstream(f.Host())
	fc := p.cfg.Cache.Fill
	dl := &download{h: sg.h, buf: make([]byte, chunkSize), budget: -1, headSize: -1,
		counter: p.m.upstreamBytes.WithLabelValues(f.Host())}
	_, dl.inherited = f.Progress()
	if sg.takeover {
		dl.takeover = p.m.takeover.downloaded
	}
	bo := upstream.NewBackOff(ucfg.Retry)
	failures := 0
	for attempt := 1; ; attempt++ {
		progressed, err := p.fillAttempt(ctx, reg, f, dl)
		if err == nil || errors.Is(err, upstream.ErrRangeNotSatisfiable) {
			// Complete, or resumed past the blob's end: inherited bytes
			// that are not the blob's prefix start the download over.
			if again, rerr := p.retryInherited(f, dl, err); rerr != nil || again {
				if rerr != nil {
					return rerr
				}
				continue
			}
		}
		if err == nil {
			break
		}
		if isDiskFull(err) {
			// The cache's own failure: no retry helps until eviction
			// made room, and the clients go to the upstream directly
			// (serveUncached).
			p.noteStorageError(err)
			return err
		}
		if ctx.Err() != nil {
			return fmt.Errorf("%w (last error: %v)", context.Cause(ctx), err) //nolint:errorlint // the cause decides the outcome; the last error is detail for the log
		}
		if progressed {
			failures = 0
			bo.Reset()
		}
		failures++
		ra, _ := upstream.RetryAfter(err)
		switch {
		case !retryable(err), failures >= ucfg.Retry.Attempts, ra > ucfg.Retry.MaxBackoff:
			// A Retry-After beyond max_backoff goes to the clients at
			// once: retrying sooner than asked is pointless.
			return fmt.Errorf("%w: %w", errFill, err)
		case attempt >= fc.MaxAttempts:
			return fmt.Errorf("%w: %d attempts (cache.fill.max_attempts): %w", fill.ErrBudget, attempt, err)
		}
		if unwanted, _ := f.Unwanted(); unwanted {
			return fmt.Errorf("%w: %w", fill.ErrAbandoned, err)
		}
		wait := retryWait(bo, ucfg.Retry, err)
		_, written := f.Progress()
		p.log.Info("blob fill interrupted; resuming", "digest", f.Digest(), "upstream", f.Host(),
			"offset", written, "attempt", attempt, "wait", wait, "err", err)
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return fmt.Errorf("%w (last error: %v)", context.Cause(ctx), err) //nolint:errorlint // the cause decides the outcome; the last error is detail for the log
		}
	}
	if err := p.commitFill(ctx, f, dl, st, cacheRepo); err != nil {
		return err
	}
	sg.committed = true
	return nil
}

// retryInherited decides, after an attempt that ended with every byte
// (attemptErr nil) or with a Range past the blob's end, whether the
// download must start over from zero because the bytes it inherited from
// another replica or a dead owner's staging are not the blob's
// (takeover.OnMismatch). again is true after such a restart.
func (p *Proxy) retryInherited(f *fill.Fill, dl *download, attemptErr error) (again bool, err error) {
	size, written := f.Progress()
	if attemptErr == nil && ((size >= 0 && written != size) || dl.matches(f)) {
		return false, nil // verified, or short: commitFill says which
	}
	if takeover.OnMismatch(dl.inherited, dl.restartedInherited) != takeover.Restart {
		return false, nil
	}
	p.log.Warn("the bytes inherited from another replica's download are not the blob's; downloading again from zero",
		"digest", f.Digest(), "inherited", dl.inherited, "err", attemptErr)
	dl.restartedInherited, dl.inherited = true, 0
	if err := dl.restart(f); err != nil {
		return false, err
	}
	return true, nil
}

// retryable reports whether an attempt's error is worth another attempt.
func retryable(err error) bool {
	if errors.Is(err, fill.ErrTooSlow) {
		return true
	}
	return upstream.Retryable(err)
}

// retryWait is the wait before the next attempt: the backoff, or the
// upstream's Retry-After when longer, never more than MaxBackoff.
func retryWait(b backoff.BackOff, r config.Retry, err error) time.Duration {
	d := b.NextBackOff()
	if ra, ok := upstream.RetryAfter(err); ok {
		d = max(d, ra)
	}
	return min(d, r.MaxBackoff)
}

// restart throws the staged bytes away for a download from zero.
func (dl *download) restart(f *fill.Fill) error {
	dl.h.Reset()
	return f.Restart()
}

// matches reports whether the bytes hashed so far are the blob.
func (dl *download) matches(f *fill.Fill) bool {
	return fmt.Sprintf("%s:%x", f.Digest().Algorithm(), dl.h.Sum(nil)) == f.Digest().String()
}

// fillAttempt runs one upstream request: from the staged length onwards,
// or from zero when the server ignores Range. It returns whether any byte
// arrived.
func (p *Proxy) fillAttempt(ctx context.Context, reg upstream.Registry, f *fill.Fill, dl *download) (bool, error) {
	size, written := f.Progress()
	if written > 0 && (size < 0 || written == size) && dl.matches(f) {
		// Every byte is here, only the end of the body was lost: a Range
		// from the end would be answered 416.
		return false, nil
	}
	if size >= 0 && written == size {
		if err := dl.restart(f); err != nil { // complete but wrong
			return false, err
		}
		written = 0
	}
	b, err := reg.GetBlob(ctx, f.Repo(), f.Digest(), written)
	if err != nil {
		return false, err
	}
	defer b.Body.Close()
	if size < 0 && b.Size >= 0 && written > b.Size {
		// More bytes staged than the blob has: inherited ones (a dead
		// owner's staging adopted before the size was known) that end
		// past it. Only the first b.Size bytes can be the blob's. Cut
		// before the size is published, so that no reader starts on
		// bytes about to go.
		if err := dl.rewind(f, b.Size); err != nil {
			return false, err
		}
		written = b.Size
	}
	if b.Size >= 0 {
		if err := f.SetSize(b.Size); err != nil {
			return false, fmt.Errorf("%w: from %d to %d", err, size, b.Size)
		}
		size = b.Size
	}
	limit := size
	if limit < 0 {
		// No length, neither now nor before: without a bound, a body that
		// never ends would be written until max_duration.
		limit = p.headBound(ctx, reg, f, dl)
	}
	if limit >= 0 {
		dl.budget = limit*int64(p.cfg.Cache.Fill.MaxDownloadFactor) + downloadSlack
	}
	var body io.Reader = b.Body
	if b.Offset != written {
		if b.Offset != 0 {
			return false, fmt.Errorf("%w: upstream resumed at %d, want %d", upstream.ErrInvalid, b.Offset, written)
		}
		// The server ignored Range: the body starts over. Its prefix must
		// be the bytes already staged (and served); where it differs, the
		// staged bytes are cut there and a new generation begins.
		body, err = dl.comparePrefix(f, b.Body, written)
		if err != nil {
			return false, err
		}
		_, written = f.Progress()
	}
	return p.copyBody(ctx, f, dl, body, size, limit, written)
}

// headBound returns the size the upstream's HEAD gives for a blob whose GET
// answers carry no length, asking once per fill; -1 when the HEAD cannot
// tell (the fill is then bounded only by max_duration and abandonment).
// The size bounds the bytes the fill takes; it is not published to
// clients, who wait for the verified blob as for any body without length.
func (p *Proxy) headBound(ctx context.Context, reg upstream.Registry, f *fill.Fill, dl *download) int64 {
	if dl.headAsked {
		return dl.headSize
	}
	dl.headAsked = true
	n, err := reg.HeadBlob(ctx, f.Repo(), f.Digest())
	if err != nil {
		p.log.Warn("blob GET without length and no size from a HEAD; the fill is bounded only by its duration",
			"digest", f.Digest(), "upstream", f.Host(), "err", err)
		return -1
	}
	dl.headSize = n
	return n
}

// comparePrefix reads the first n bytes of a body that restarted from zero
// and compares them with the staged bytes. When all match, the staged bytes
// (and the hash) stand and the rest of the body follows. At the first
// difference the fill is rewound to it (readers that had bytes fail), the
// hash recomputed over the common prefix, and the body continues from
// there: the returned reader yields the body from the fill's new length.
func (dl *download) comparePrefix(f *fill.Fill, body io.Reader, n int64) (io.Reader, error) {
	staged := make([]byte, len(dl.buf))
	var pos int64
	for pos < n {
		chunk := dl.buf[:min(int64(len(dl.buf)), n-pos)]
		got, err := io.ReadFull(body, chunk)
		if berr := dl.received(got); berr != nil {
			return nil, berr
		}
		if _, serr := f.ReadAt(staged[:got], pos); serr != nil && !errors.Is(serr, io.EOF) {
			return nil, fmt.Errorf("read staging file: %w", serr)
		}
		if i := firstDiff(chunk[:got], staged[:got]); i >= 0 {
			at := pos + int64(i)
			rest := append([]byte(nil), chunk[i:got]...) // rewind reuses dl.buf
			if err := dl.rewind(f, at); err != nil {
				return nil, err
			}
			return io.MultiReader(bytes.NewReader(rest), body), nil
		}
		pos += int64(got)
		if err != nil {
			// The body ended or broke within the prefix: nothing new.
			if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
				return nil, fmt.Errorf("%w: restarted body ended at %d of the %d staged bytes", upstream.ErrUnavailable, pos, n)
			}
			return nil, fmt.Errorf("%w: %w", upstream.ErrUnavailable, err)
		}
	}
	return body, nil
}

func firstDiff(a, b []byte) int {
	for i := range a {
		if a[i] != b[i] {
			return i
		}
	}
	return -1
}

// rewind cuts the staged bytes at n (a new generation) and rehashes them.
func (dl *download) rewind(f *fill.Fill, n int64) error {
	if err := f.Rewind(n); err != nil {
		return err
	}
	dl.h.Reset()
	var off int64
	for off < n {
		got, err := f.ReadAt(dl.buf[:min(int64(len(dl.buf)), n-off)], off)
		dl.h.Write(dl.buf[:got])
		off += int64(got)
		if err != nil && off < n {
			return fmt.Errorf("read staging file: %w", err)
		}
	}
	return nil
}

// copyBody appends one response body to the fill, within the fill's
// bounds: byte budget, minimum rate, abandonment. size is the announced
// size (-1: none), limit the most bytes the blob may have (size, or the
// upstream's HEAD answer when no size was announced; -1: unknown).
func (p *Proxy) copyBody(ctx context.Context, f *fill.Fill, dl *download, body io.Reader, size, limit, written int64) (bool, error) {
	fc := p.cfg.Cache.Fill
	progressed := false
	windowStart, windowBytes := time.Now(), int64(0)
	for {
		n, rerr := body.Read(dl.buf)
		if n > 0 {
			if limit >= 0 && written+int64(n) > limit {
				return true, fmt.Errorf("%w: upstream sent more than %d bytes", upstream.ErrDigestMismatch, limit)
			}
			if err := dl.received(n); err != nil {
				return progressed, err
			}
			if err := f.Append(dl.buf[:n]); err != nil {
				return progressed, fmt.Errorf("write staging file: %w", err)
			}
			dl.h.Write(dl.buf[:n])
			progressed = true
			written += int64(n)
			windowBytes += int64(n)
		}
		if unwanted, since := f.Unwanted(); unwanted && since >= fc.AbandonAfter {
			return progressed, fmt.Errorf("%w: unwanted for %s", fill.ErrAbandoned, since.Round(time.Second))
		}
		if el := time.Since(windowStart); fc.MinRate > 0 && el >= fc.MinRateWindow {
			if windowBytes < int64(el.Seconds()*float64(fc.MinRate)) {
				return progressed, fmt.Errorf("%w: %d bytes in %s (cache.fill.min_rate %d/s)", fill.ErrTooSlow, windowBytes, el.Round(time.Second), fc.MinRate)
			}
			windowStart, windowBytes = time.Now(), 0
		}
		if errors.Is(rerr, io.EOF) {
			if size >= 0 && written < size {
				return progressed, fmt.Errorf("%w: body ended at %d of %d bytes", upstream.ErrUnavailable, written, size)
			}
			return progressed, nil
		}
		if rerr != nil {
			if ctx.Err() != nil {
				return progressed, rerr
			}
			if !errors.Is(rerr, upstream.ErrUnavailable) {
				rerr = fmt.Errorf("%w: %w", upstream.ErrUnavailable, rerr)
			}
			return progressed, rerr
		}
	}
}

// commitFill checks size and digest, syncs, and commits atomically.
func (p *Proxy) commitFill(ctx context.Context, f *fill.Fill, dl *download, st *storage.Staging, cacheRepo string) error {
	size, written := f.Progress()
	if size >= 0 && written != size {
		return fmt.Errorf("%w: got %d bytes, want %d", upstream.ErrDigestMismatch, written, size)
	}
	if !dl.matches(f) {
		return fmt.Errorf("%w: upstream bytes hash to %s:%x, want %s", upstream.ErrDigestMismatch, f.Digest().Algorithm(), dl.h.Sum(nil), f.Digest())
	}
	// Verified: whatever happens to the commit, the readers may have every
	// byte once the fill is done.
	f.MarkVerified()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync staging file: %w", err)
	}
	if err := p.store.CommitBlob(ctx, f.Digest(), st); err != nil {
		p.noteStorageError(err)
		return err
	}
	p.noteStorageWrite()
	p.cacheHooks().Added(f.Digest(), written)
	if err := p.store.LinkBlob(ctx, cacheRepo, f.Digest()); err != nil {
		p.log.Warn("link blob", "repo", cacheRepo, "digest", f.Digest(), "err", err)
	}
	p.log.Info("blob committed", "digest", f.Digest(), "upstream", f.Host(), "repo", f.Repo(), "bytes", written)
	return nil
}
