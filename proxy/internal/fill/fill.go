// Package fill is the state machine of a blob fill: one download per digest
// that writes a staging file, and any number of readers that follow it as it
// grows. It knows nothing about HTTP, upstreams or storage: the download is a
// function the caller passes in, the staging file a small interface.
//
// The rules it enforces:
//   - A reader gets the blob's last byte only once the download has verified
//     every byte and ended (a complete response carries only verified
//     bytes); a reader in verified-only mode gets nothing before that.
//   - A restart from byte zero starts a new generation: a reader that has
//     already delivered bytes of an earlier generation fails with
//     ErrRestarted instead of mixing two downloads.
//   - The staging file stays open until the download and every reader (and
//     every hold taken at join) let go.
//   - A fill that found the blob already committed publishes no size:
//     readers go to the store once it is done.
package fill

import (
	"context"
	"errors"
	"io"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
)

// File is the staging file as the fill uses it. *os.File implements it;
// tests use a temporary or in-memory file.
type File interface {
	io.ReaderAt
	io.WriterAt
	Truncate(size int64) error
	Sync() error
	Close() error
}

// The fill's own errors: conditions of the proxy, not answers of an
// upstream.
var (
	// ErrRestarted: the download restarted from zero after this reader had
	// delivered bytes of the earlier attempt; the reader must abort.
	ErrRestarted = errors.New("fill: download restarted from zero after bytes of the earlier attempt were served")
	// ErrSizeChanged: the upstream announced another size than before.
	ErrSizeChanged = errors.New("fill: upstream changed the blob size")
	// ErrCancelled: an operator cancelled the fill.
	ErrCancelled = errors.New("fill: cancelled by an operator")
	// ErrAbandoned: no client and no prefetch wants the fill any more.
	ErrAbandoned = errors.New("fill: abandoned, nobody wants it any more")
	// ErrBudget: the fill used up its attempts, bytes or time.
	ErrBudget = errors.New("fill: gave up, over its budget")
	// ErrTooSlow: an attempt ran below the minimum rate.
	ErrTooSlow = errors.New("fill: upstream below the minimum rate")
	// ErrLeaseTimeout: waiting for another replica's fill took too long.
	ErrLeaseTimeout = errors.New("fill: timed out waiting for another replica's fill")
	// ErrClosed: the registry is shutting down.
	ErrClosed = errors.New("fill: shutting down")
)

// Fill is one blob download and its shared state.
type Fill struct {
	dgst    digest.Digest
	host    string
	repo    string
	value   any
	started time.Time
	cancel  context.CancelCauseFunc

	mu      sync.Mutex
	changed chan struct{} // closed and replaced on every state change
	file    File          // nil until attached
	size    int64         // -1 until known
	written int64
	gen     int // bumped by every restart from zero
	// verified: every byte is written and matches size and digest. Once the
	// fill is done, readers get every byte even if the commit failed.
	verified bool
	cached   bool // the blob was already committed: readers use the store
	// unlinked: the upstream could not confirm that the fill's repository
	// has the blob (it was temporarily away), so no repository may be
	// linked to it on the strength of this fill.
	unlinked bool
	done     bool
	err      error
	refs     int // the download, holds and readers: the file closes at 0
	wants    int // holds, readers and followers
	// unwantedSince is when wants last dropped to 0 (zero while wanted).
	unwantedSince time.Time
}

// Digest, Host and Repo name the fill: what it downloads, from where.
func (f *Fill) Digest() digest.Digest { return f.dgst }

// Host is the upstream registry host the fill downloads from.
func (f *Fill) Host() string { return f.host }

// Repo is the upstream repository the fill downloads from.
func (f *Fill) Repo() string { return f.repo }

// Value is the Start.Value the fill was started with.
func (f *Fill) Value() any { return f.value }

func (f *Fill) broadcastLocked() {
	close(f.changed)
	f.changed = make(chan struct{})
}

func (f *Fill) releaseLocked() {
	f.refs--
	if f.refs == 0 && f.file != nil {
		_ = f.file.Close()
	}
}

func (f *Fill) unwantLocked() {
	f.wants--
	if f.wants == 0 {
		f.unwantedSince = time.Now()
	}
}

// Info is a snapshot of a fill for listings.
type Info struct {
	Digest     digest.Digest `json:"digest"`
	Host       string        `json:"host"`
	Repo       string        `json:"repo"`
	Size       int64         `json:"size"` // -1 while unknown
	Written    int64         `json:"written"`
	Clients    int           `json:"clients"`
	Generation int           `json:"generation"`
	Started    time.Time     `json:"started"`
}

// Info returns a snapshot of the fill.
func (f *Fill) Info() Info {
	f.mu.Lock()
	defer f.mu.Unlock()
	return Info{Digest: f.dgst, Host: f.host, Repo: f.repo, Size: f.size, Written: f.written,
		Clients: f.wants, Generation: f.gen, Started: f.started}
}

// --- the download's side ---

// Attach gives the fill its staging file. The download calls it once,
// before it writes.
func (f *Fill) Attach(file File) {
	f.mu.Lock()
	f.file = file
	f.mu.Unlock()
}

// SetSize records the size the upstream announced. A different size than
// one announced before is ErrSizeChanged.
func (f *Fill) SetSize(n int64) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.size >= 0 && f.size != n {
		return ErrSizeChanged
	}
	if f.size < 0 {
		f.size = n
		f.broadcastLocked()
	}
	return nil
}

// Progress returns the announced size (-1: unknown) and the bytes written.
func (f *Fill) Progress() (size, written int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.size, f.written
}

// Append writes p at the end of the staged bytes and wakes the readers.
// Only the download calls it.
func (f *Fill) Append(p []byte) error {
	f.mu.Lock()
	file, off := f.file, f.written
	f.mu.Unlock()
	if _, err := file.WriteAt(p, off); err != nil {
		return err
	}
	f.mu.Lock()
	f.written += int64(len(p))
	f.broadcastLocked()
	f.mu.Unlock()
	return nil
}

// Restart throws the staged bytes away for a download from zero: a new
// generation. Readers that delivered bytes of the old one fail.
func (f *Fill) Restart() error { return f.Rewind(0) }

// Rewind keeps only the first n staged bytes (the download found the bytes
// after them wrong) and starts a new generation: readers that delivered
// bytes of the old one fail, since their bytes may differ from the new.
func (f *Fill) Rewind(n int64) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if n > f.written {
		n = f.written
	}
	if err := f.file.Truncate(n); err != nil {
		return err
	}
	f.written = n
	f.gen++
	f.broadcastLocked()
	return nil
}

// ReadAt reads staged bytes (the download compares a re-sent prefix).
func (f *Fill) ReadAt(p []byte, off int64) (int, error) {
	f.mu.Lock()
	file := f.file
	f.mu.Unlock()
	return file.ReadAt(p, off)
}

// Sync flushes the staging file.
func (f *Fill) Sync() error {
	f.mu.Lock()
	file := f.file
	f.mu.Unlock()
	return file.Sync()
}

// MarkVerified records that every byte is written and checked. Size
// becomes the written length if the upstream never announced one.
func (f *Fill) MarkVerified() {
	f.mu.Lock()
	f.verified = true
	if f.size < 0 {
		f.size = f.written
	}
	f.mu.Unlock()
}

// MarkUnlinked records that the upstream could not confirm the fill's
// repository (see Linkable).
func (f *Fill) MarkUnlinked() {
	f.mu.Lock()
	f.unlinked = true
	f.mu.Unlock()
}

// Linkable reports whether a repository may be linked to the blob on the
// strength of this fill (MarkUnlinked was not called).
func (f *Fill) Linkable() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return !f.unlinked
}

// MarkCached records that the blob was already committed (by another
// process): readers go to the store once the fill is done. No size is
// published, so no reader opens the empty staging file.
func (f *Fill) MarkCached() {
	f.mu.Lock()
	f.cached = true
	f.broadcastLocked()
	f.mu.Unlock()
}

// Unwanted reports for how long no client and no follower has wanted the
// fill (0 while wanted).
func (f *Fill) Unwanted() (bool, time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.wants > 0 {
		return false, 0
	}
	return true, time.Since(f.unwantedSince)
}

// --- the followers' side ---

// WaitSize blocks until the fill knows the blob's size, found it cached, or
// ended. It returns the size (-1 if unknown) and the outcome so far.
func (f *Fill) WaitSize(ctx context.Context) (size int64, cached bool, err error) {
	for {
		f.mu.Lock()
		size, cached, done, ferr, ch := f.size, f.cached, f.done, f.err, f.changed
		f.mu.Unlock()
		switch {
		case done:
			return size, cached, ferr
		case cached:
			return -1, true, nil
		case size >= 0:
			return size, false, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return -1, false, ctx.Err()
		}
	}
}

// Wait blocks until the fill has ended and returns its outcome.
func (f *Fill) Wait(ctx context.Context) error {
	return f.follow(ctx, nil)
}

// Outcome reports a finished fill's result: cached means the blob was
// committed before the fill started (nothing downloaded).
func (f *Fill) Outcome() (done, cached, verified bool, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.done, f.cached, f.verified, f.err
}

// follow waits for the end, reporting newly written bytes to progress (nil:
// none). After a restart nothing is reported until the bytes pass what was
// already reported.
func (f *Fill) follow(ctx context.Context, progress func(int64)) error {
	var reported int64
	for {
		f.mu.Lock()
		written, done, ferr, ch := f.written, f.done, f.err, f.changed
		f.mu.Unlock()
		if progress != nil && written > reported {
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

// readableLocked is how far a reader may read. Until the fill is done and
// verified, the last byte is held back (verifiedOnly: every byte).
func (f *Fill) readableLocked(verifiedOnly bool) int64 {
	if f.done && (f.err == nil || f.verified) && !f.cached {
		return f.written
	}
	if verifiedOnly || f.done {
		return 0
	}
	if f.size >= 0 && f.written >= f.size {
		return f.size - 1
	}
	return f.written
}
