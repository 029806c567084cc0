package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/opencontainers/go-digest"

	"github.com/stowage/stowage/storage"
)

// errFillClosed ends fills when the proxy shuts down.
var errFillClosed = errors.New("proxy: shutting down")

// fill owns one blob download: the staging file, how many bytes are
// written, and the outcome. Readers follow it with fillReader; the download
// runs on its own context, detached from every client.
type fill struct {
	dgst      digest.Digest
	host      string
	repo      string // at the upstream
	cacheRepo string
	st        *storage.Staging

	mu      sync.Mutex
	changed chan struct{} // closed and replaced on every state change
	size    int64         // total size, -1 until the upstream said it
	written int64         // bytes in the staging file
	// verified: every byte is written and matches the digest and size.
	// Once the fill is done, readers get every byte even if the commit
	// (fsync, rename) failed: only the cache copy is lost.
	verified bool
	done     bool
	err      error // outcome once done; nil means committed
	// cached means the blob was already committed when the fill started:
	// readers must use the store, the staging file holds nothing.
	cached bool
	// refs counts the download itself and every open reader: the staging
	// file is closed when the last of them lets go.
	refs int

	cancel context.CancelFunc
}

// releaseLocked drops one reference and closes the staging file with the
// last one. The file may already be renamed into the cache or removed; the
// descriptor stays valid until then.
func (f *fill) releaseLocked() {
	f.refs--
	if f.refs == 0 {
		_ = f.st.File.Close()
	}
}

// fillRegistry is the set of running fills, keyed by digest: one download
// per digest per process. It is owned by the Proxy instance.
type fillRegistry struct {
	p       *Proxy
	mu      sync.Mutex
	running map[digest.Digest]*fill
	closed  bool
	wg      sync.WaitGroup
}

func newFillRegistry(p *Proxy) *fillRegistry {
	return &fillRegistry{p: p, running: map[digest.Digest]*fill{}}
}

// join returns the running fill for the request's digest, starting one if
// none runs. The caller follows it with newReader. With hold, the caller
// also gets a reference on the staging file (held reports whether it got
// one; it must release it, or hand it to a reader with heldReader): the
// verified bytes then stay readable for it even if the fill ends, commit
// failed included, before it starts reading.
func (fr *fillRegistry) join(q *request, hold bool) (f *fill, held bool, err error) {
	fr.mu.Lock()
	defer fr.mu.Unlock()
	if fr.closed {
		return nil, false, errFillClosed
	}
	if f, ok := fr.running[q.dgst]; ok {
		if hold {
			f.mu.Lock()
			if f.refs > 0 {
				f.refs++
				held = true
			}
			f.mu.Unlock()
		}
		return f, held, nil
	}
	st, err := fr.p.store.NewStaging(q.dgst)
	if err != nil {
		return nil, false, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	f = &fill{
		dgst: q.dgst, host: q.host, repo: q.repo, cacheRepo: q.cacheRepo,
		st: st, changed: make(chan struct{}), size: -1, cancel: cancel, refs: 1,
	}
	if hold {
		f.refs++
		held = true
	}
	fr.running[q.dgst] = f
	fr.wg.Add(1)
	fr.p.m.fillsInFlight.Inc()
	go func() {
		defer fr.wg.Done()
		defer cancel()
		err := fr.p.runFill(ctx, f)
		fr.finish(f, err)
	}()
	return f, held, nil
}

// finish records the outcome, wakes every reader and forgets the fill.
func (fr *fillRegistry) finish(f *fill, err error) {
	outcome := "committed"
	f.mu.Lock()
	cached := f.cached
	f.mu.Unlock()
	if err != nil || cached {
		// Failed, or committed by another process: the staging file
		// holds nothing anyone will need.
		if dErr := f.st.Discard(); dErr != nil {
			fr.p.log.Error("remove staging file", "digest", f.dgst, "err", dErr)
		}
	}
	if err != nil {
		outcome = "failed"
		fr.p.log.Warn("blob fill failed", "digest", f.dgst, "upstream", f.host, "repo", f.repo, "err", err)
	}
	f.mu.Lock()
	f.done, f.err = true, err
	f.broadcastLocked()
	f.releaseLocked()
	f.mu.Unlock()

	fr.mu.Lock()
	delete(fr.running, f.dgst)
	fr.mu.Unlock()
	fr.p.m.fillsInFlight.Dec()
	fr.p.m.fills.WithLabelValues(outcome).Inc()
}

// close cancels all running fills and waits for them.
func (fr *fillRegistry) close() {
	fr.mu.Lock()
	fr.closed = true
	for _, f := range fr.running {
		f.cancel()
	}
	fr.mu.Unlock()
	fr.wg.Wait()
}

func (f *fill) broadcastLocked() {
	close(f.changed)
	f.changed = make(chan struct{})
}

// waitSize blocks until the fill knows the blob's size or has ended. It
// returns the size (-1 if the fill ended without one) and the outcome so far.
func (f *fill) waitSize(ctx context.Context) (size int64, cached bool, err error) {
	for {
		f.mu.Lock()
		size, done, ferr, cached, ch := f.size, f.done, f.err, f.cached, f.changed
		f.mu.Unlock()
		if done {
			return size, cached, ferr
		}
		if size >= 0 {
			return size, false, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return -1, false, ctx.Err()
		}
	}
}

// wait blocks until the fill has ended and returns its outcome.
func (f *fill) wait(ctx context.Context) error {
	for {
		f.mu.Lock()
		done, ferr, ch := f.done, f.err, f.changed
		f.mu.Unlock()
		if done {
			return ferr
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// follow waits for the fill to end like wait, reporting newly written
// bytes to progress (nil: none) as they arrive. A restart from zero (an
// upstream that ignored Range) reports nothing until it passes the bytes
// already reported.
func (f *fill) follow(ctx context.Context, progress func(int64)) error {
	if progress == nil {
		return f.wait(ctx)
	}
	var reported int64
	for {
		f.mu.Lock()
		written, done, ferr, ch := f.written, f.done, f.err, f.changed
		f.mu.Unlock()
		if written > reported {
			progress(written - reported)
			reported = written
		}
		if done {
			return ferr
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// readableLocked is how far readers may read. Until the fill is done the
// last byte is held back, so no client ever receives a complete response
// with unverified bytes (a mismatch cuts it short), and a client that has
// the whole blob knows it is in the cache. Verified bytes stay readable
// even if the commit (fsync, rename) failed: only the cache copy is lost.
func (f *fill) readableLocked() int64 {
	if f.done && (f.err == nil || f.verified) {
		return f.written
	}
	if f.size >= 0 && f.written >= f.size {
		return f.size - 1
	}
	return f.written
}

// fillReader is one client's view of a fill: an io.ReadSeeker for
// http.ServeContent that blocks until the bytes it needs exist.
type fillReader struct {
	f *fill
	// ctx is the client's request context: a reader lives only as long as
	// that request, and io.Reader has no context parameter.
	ctx  context.Context
	off  int64
	size int64
	err  error // first error returned, for the handler's abort decision
}

// newReader opens a reader; the caller must Close it. It fails when the
// fill has already ended (the caller then uses the store or the error).
func (f *fill) newReader(ctx context.Context, size int64) (*fillReader, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.refs == 0 {
		return nil, false
	}
	f.refs++
	return f.heldReader(ctx, size), true
}

// heldReader turns a reference already taken (newReader, join(q, true))
// into a reader.
func (f *fill) heldReader(ctx context.Context, size int64) *fillReader {
	return &fillReader{f: f, ctx: ctx, size: size}
}

// release drops a reference taken by join(q, true) that no reader took.
func (f *fill) release() {
	f.mu.Lock()
	f.releaseLocked()
	f.mu.Unlock()
}

// verifiedSize reports the size of a fill whose bytes are verified.
func (f *fill) verifiedSize() (int64, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.written, f.verified
}

// Close releases the reader's hold on the staging file.
func (r *fillReader) Close() error {
	if r.f != nil {
		r.f.mu.Lock()
		r.f.releaseLocked()
		r.f.mu.Unlock()
		r.f = nil
	}
	return nil
}

func (r *fillReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for {
		f := r.f
		f.mu.Lock()
		avail, verified, done, ferr, ch := f.readableLocked(), f.verified, f.done, f.err, f.changed
		f.mu.Unlock()
		if r.off < avail {
			n := int64(len(p))
			if rem := avail - r.off; rem < n {
				n = rem
			}
			got, err := f.st.File.ReadAt(p[:n], r.off)
			r.off += int64(got)
			if err != nil && !errors.Is(err, io.EOF) {
				r.err = err
				return got, err
			}
			if got == 0 {
				r.err = io.ErrUnexpectedEOF
				return 0, r.err
			}
			return got, nil
		}
		if done {
			if ferr != nil && !verified { // after verification only the commit failed
				r.err = ferr
				return 0, ferr
			}
			return 0, io.EOF
		}
		select {
		case <-ch:
		case <-r.ctx.Done():
			r.err = r.ctx.Err()
			return 0, r.err
		}
	}
}

func (r *fillReader) Seek(offset int64, whence int) (int64, error) {
	var abs int64
	switch whence {
	case io.SeekStart:
		abs = offset
	case io.SeekCurrent:
		abs = r.off + offset
	case io.SeekEnd:
		abs = r.size + offset
	default:
		return 0, fmt.Errorf("fill reader: bad whence %d", whence)
	}
	if abs < 0 {
		return 0, errors.New("fill reader: negative position")
	}
	r.off = abs
	return abs, nil
}
