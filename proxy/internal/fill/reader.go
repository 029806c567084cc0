package fill

import (
	"context"
	"errors"
	"fmt"
	"io"
)

// Hold is a client's stake in a fill, taken when it joins: a reference on
// the staging file (verified bytes stay readable for it even if the fill
// ends before it reads) and a want (the fill is not abandoned while held).
// Turn it into a Reader, Follow it, or Release it.
type Hold struct {
	f    *Fill
	used bool
}

// Fill is the held fill.
func (h *Hold) Fill() *Fill { return h.f }

// Release lets go of a hold no reader took. It is a no-op afterwards.
func (h *Hold) Release() {
	if h.used {
		return
	}
	h.used = true
	h.f.mu.Lock()
	h.f.releaseLocked()
	h.f.unwantLocked()
	h.f.mu.Unlock()
}

// Reader turns the hold into a reader of size bytes for a client whose
// request context is ctx. With verifiedOnly the reader gets no byte before
// the whole blob is verified (a range that does not reach the last byte
// would otherwise complete with unverified bytes).
func (h *Hold) Reader(ctx context.Context, size int64, verifiedOnly bool) *Reader {
	h.used = true
	return &Reader{f: h.f, ctx: ctx, size: size, verifiedOnly: verifiedOnly}
}

// Follow waits for the fill to end like Wait, reporting newly written bytes
// to progress (nil: none). It drops the file reference at once and the
// want at the end: a follower keeps the fill wanted, but reads nothing.
func (h *Hold) Follow(ctx context.Context, progress func(int64)) error {
	h.used = true
	f := h.f
	f.mu.Lock()
	f.releaseLocked()
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		f.unwantLocked()
		f.mu.Unlock()
	}()
	return f.follow(ctx, progress)
}

// Reader is one client's view of a fill: an io.ReadSeeker (for
// http.ServeContent) that blocks until the bytes it needs exist.
type Reader struct {
	f *Fill
	// ctx is the client's request context: io.Reader has no context
	// parameter, and a reader lives only as long as its request.
	ctx          context.Context
	off          int64
	size         int64
	verifiedOnly bool
	delivered    bool // bytes went out: they belong to generation gen
	gen          int
	// err and closed are guarded by f.mu: net/http's multi-range goroutine
	// may still be in Read when the handler calls Err and Close.
	err    error
	closed bool
}

// ErrReaderClosed is what Read returns once the reader is closed.
var ErrReaderClosed = errors.New("fill: reader closed")

// Err is the first error Read returned (nil after a clean EOF): the
// handler aborts the response on it.
func (r *Reader) Err() error {
	r.f.mu.Lock()
	defer r.f.mu.Unlock()
	return r.err
}

// Close releases the reader's hold. A Read blocked in it, or called after
// it, returns ErrReaderClosed.
func (r *Reader) Close() error {
	f := r.f
	f.mu.Lock()
	defer f.mu.Unlock()
	if r.closed {
		return nil
	}
	r.closed = true
	f.releaseLocked()
	f.unwantLocked()
	f.broadcastLocked() // wake a Read waiting for bytes
	return nil
}

func (r *Reader) fail(err error) (int, error) {
	r.f.mu.Lock()
	if r.err == nil {
		r.err = err
	}
	r.f.mu.Unlock()
	return 0, err
}

// Read implements io.Reader.
func (r *Reader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	f := r.f
	for {
		f.mu.Lock()
		avail, gen, file := f.readableLocked(r.verifiedOnly), f.gen, f.file
		done, ferr, verified, ch := f.done, f.err, f.verified, f.changed
		rerr, closed := r.err, r.closed
		f.mu.Unlock()
		if rerr != nil {
			return 0, rerr
		}
		if closed {
			return r.fail(ErrReaderClosed)
		}
		if r.delivered && gen != r.gen {
			return r.fail(ErrRestarted)
		}
		if r.off < avail {
			n := min(int64(len(p)), avail-r.off)
			got, err := file.ReadAt(p[:n], r.off)
			if got > 0 {
				if !r.delivered {
					r.delivered, r.gen = true, gen
				}
				r.off += int64(got)
				return got, nil
			}
			if err != nil && !errors.Is(err, io.EOF) {
				return r.fail(err)
			}
			// Nothing there: a restart truncated the file under us.
			f.mu.Lock()
			moved := f.gen != gen
			f.mu.Unlock()
			if moved {
				continue
			}
			return r.fail(io.ErrUnexpectedEOF)
		}
		if done {
			if ferr != nil && !verified { // after verification only the commit failed
				return r.fail(ferr)
			}
			if r.off < r.size {
				return r.fail(io.ErrUnexpectedEOF)
			}
			return 0, io.EOF
		}
		select {
		case <-ch:
		case <-r.ctx.Done():
			return r.fail(r.ctx.Err())
		}
	}
}

// Seek implements io.Seeker.
func (r *Reader) Seek(offset int64, whence int) (int64, error) {
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

var _ io.ReadSeekCloser = (*Reader)(nil)
