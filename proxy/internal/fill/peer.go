package fill

import "context"

// Peer streaming: another replica reads a running fill through the owner's
// internal endpoint.

// Join returns a hold on f while its download runs (false once it is
// done: the blob is then in the store, or the fill failed).
func (f *Fill) Join() (*Hold, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.done {
		return nil, false
	}
	f.refs++
	f.wants++
	return &Hold{f: f}, true
}

// Generation is the number of restarts from zero so far.
func (f *Fill) Generation() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.gen
}

// PeerReader turns the hold into a reader of size bytes from off that
// belongs to generation gen from the start: when the fill is (or becomes)
// of another generation, Read fails with ErrRestarted before any byte of
// it. The last byte is held back until the download is verified and done,
// as for any reader.
func (h *Hold) PeerReader(ctx context.Context, size, off int64, gen int) *Reader {
	h.used = true
	return &Reader{f: h.f, ctx: ctx, size: size, off: off, delivered: true, gen: gen}
}
