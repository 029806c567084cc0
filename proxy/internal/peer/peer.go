// Package peer is peer streaming between replicas that share one cache: the
// wire protocol of the internal fill endpoint, and the follower, the state
// machine of a replica that streams another replica's running fill into a
// local one instead of waiting for its commit.
//
// The owner's endpoint streams its staging file from an offset and holds the
// last byte back until its download is verified and done (the fill reader's
// rule). A response announces the owner's fill generation; a resumed request
// names it, and the owner refuses (409) when its fill restarted since. The
// end of a response carries a trailer: "ok" after the last byte, or why the
// stream ended early. A body that ends without a trailer is a broken
// connection: the follower resumes from what it has.
//
// The follower never trusts the owner alone: it hashes what it receives and
// completes only when the owner sent the last byte and its own hash matches.
package peer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"
)

// The wire protocol.
const (
	// PathPrefix is the internal endpoint: PathPrefix + digest, with the
	// query parameters offset (default 0) and gen (the generation the
	// follower's bytes belong to; empty for any).
	PathPrefix = "/internal/v1/fills/"
	// HeaderSize is the blob's size.
	HeaderSize = "Stowage-Blob-Size"
	// HeaderOffset is the offset the body starts at.
	HeaderOffset = "Stowage-Offset"
	// HeaderGeneration is the owner's fill generation the body belongs to.
	HeaderGeneration = "Stowage-Fill-Generation"
	// TrailerEnd tells how the body ended: one of the End values.
	TrailerEnd = "Stowage-Fill-End"
)

// Values of TrailerEnd.
const (
	// EndOK: the body ended with the blob's last byte, which the owner
	// released after verifying every byte.
	EndOK = "ok"
	// EndRestarted: the owner's fill restarted from zero (a new generation).
	EndRestarted = "restarted"
	// EndDigest: the owner's download failed verification: the upstream's
	// bytes are wrong, nothing was committed.
	EndDigest = "digest-mismatch"
	// EndGone: the owner's fill ended without a verified blob (shutdown,
	// cancelled, out of budget): the lease is released, another replica may
	// take over.
	EndGone = "gone"
)

// Errors of a Source's Open.
var (
	// ErrNoStream: the owner runs no fill for the blob it can stream (it
	// finished, or does not know the size). HTTP 404.
	ErrNoStream = errors.New("peer: the owner has no stream for this blob")
	// ErrGeneration: the owner's fill restarted since the follower's bytes
	// were sent. HTTP 409.
	ErrGeneration = errors.New("peer: the owner's fill restarted")
	// ErrUnauthorized: the owner refused the shared secret. HTTP 401.
	ErrUnauthorized = errors.New("peer: the owner refused the cluster secret")
)

// Errors of Follow.
var (
	// ErrOwnerGone: the owner cannot (or no longer) stream the fill. The
	// caller waits for its commit, or takes over once the lease is gone.
	ErrOwnerGone = errors.New("peer: the owner stopped streaming the fill")
	// ErrOwnerFailed: the owner's download failed verification.
	ErrOwnerFailed = errors.New("peer: the owner's download failed verification")
	// ErrMismatch: the streamed bytes are not the blob (wrong length or
	// hash), although the owner reported success.
	ErrMismatch = errors.New("peer: streamed bytes do not match the blob")
)

// Stream is one response of the owner.
type Stream struct {
	Size   int64
	Offset int64
	Gen    string
	Body   io.ReadCloser
	// End returns TrailerEnd once Body returned io.EOF ("" when missing:
	// a broken stream).
	End func() string
}

// Source opens the owner's stream from offset; gen "" accepts any
// generation.
type Source interface {
	Open(ctx context.Context, offset int64, gen string) (*Stream, error)
}

// Sink is the follower's local fill. Append writes and hashes; Matches
// reports whether everything appended hashes to the blob's digest.
type Sink interface {
	Progress() (size, written int64)
	SetSize(n int64) error
	Append(p []byte) error
	Restart() error
	Matches() bool
}

// Options bound a Follow.
type Options struct {
	// Retries is how many consecutive failed opens or broken streams
	// without progress end the follow with ErrOwnerGone.
	Retries int
	// Backoff is the wait between those retries.
	Backoff time.Duration
	// Restarts bounds the owner's restarts the follower goes along with.
	Restarts int
	// Stall ends a stream that delivered nothing for this long (an owner
	// that hangs); it counts as broken.
	Stall time.Duration
	// BufSize is the copy buffer (default 256 KiB).
	BufSize int
}

// Follower streams one owner's fill into a Sink. Gen is the owner's
// generation the sink's bytes belong to ("" before the first response); a
// caller that follows the same owner again keeps the Follower, one that
// follows a new owner starts a new one.
type Follower struct {
	Src  Source
	Sink Sink
	Opts Options
	Gen  string
	buf  []byte
}

// Follow streams until the sink holds the whole blob, released by the
// owner after its verification and matching the sink's own hash (nil), or
// until it cannot go on: ErrOwnerGone, ErrOwnerFailed, ErrMismatch, the
// sink's errors, or the context's cause.
func (fl *Follower) Follow(ctx context.Context) error {
	if fl.buf == nil {
		fl.buf = make([]byte, max(fl.Opts.BufSize, 256<<10))
	}
	failures, restarts := 0, 0
	var last error
	for {
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		if failures >= max(fl.Opts.Retries, 1) {
			return fmt.Errorf("%w: %w", ErrOwnerGone, last)
		}
		if failures > 0 {
			select {
			case <-time.After(fl.Opts.Backoff):
			case <-ctx.Done():
				return context.Cause(ctx)
			}
		}
		end, progressed, err := fl.stream(ctx)
		if progressed {
			failures = 0
		}
		switch {
		case err == nil && end == EndOK:
			size, written := fl.Sink.Progress()
			if written != size || !fl.Sink.Matches() {
				return fmt.Errorf("%w: %d of %d bytes", ErrMismatch, written, size)
			}
			return nil
		case errors.Is(err, ErrGeneration), err == nil && end == EndRestarted:
			restarts++
			if restarts > fl.Opts.Restarts {
				return fmt.Errorf("%w: restarted %d times", ErrOwnerGone, restarts)
			}
			if err := fl.Sink.Restart(); err != nil {
				return err
			}
			fl.Gen = ""
		case err == nil && end == EndDigest:
			return ErrOwnerFailed
		case err == nil && end == EndGone:
			return fmt.Errorf("%w: its fill ended unverified", ErrOwnerGone)
		case errors.Is(err, ErrNoStream), errors.Is(err, ErrUnauthorized):
			return fmt.Errorf("%w: %w", ErrOwnerGone, err)
		case err != nil && !errors.Is(err, errBroken):
			return err // the sink's or the context's
		default: // broken: resume from what the sink has
			failures++
			last = err
			if err == nil {
				last = errors.New("stream ended without a trailer")
			}
		}
	}
}

// errBroken marks a failed open or a cut stream: worth a retry.
var errBroken = errors.New("peer: stream broken")

// stream runs one request and returns its trailer, whether bytes arrived,
// and an error (errBroken for retryable transport failures).
func (fl *Follower) stream(ctx context.Context) (end string, progressed bool, err error) {
	sctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stall := fl.Opts.Stall
	if stall <= 0 {
		stall = time.Minute
	}
	errStalled := fmt.Errorf("%w: nothing for %s", errBroken, stall)
	watchdog := time.AfterFunc(stall, func() { cancel(errStalled) })
	defer watchdog.Stop()

	_, written := fl.Sink.Progress()
	s, err := fl.Src.Open(sctx, written, fl.Gen)
	if err != nil {
		if errors.Is(err, ErrNoStream) || errors.Is(err, ErrGeneration) || errors.Is(err, ErrUnauthorized) {
			return "", false, err
		}
		if ctx.Err() != nil {
			return "", false, context.Cause(ctx)
		}
		return "", false, fmt.Errorf("%w: %w", errBroken, err)
	}
	defer s.Body.Close()
	if s.Offset != written {
		return "", false, fmt.Errorf("%w: owner answered from %d, asked %d", errBroken, s.Offset, written)
	}
	if err := fl.Sink.SetSize(s.Size); err != nil {
		return "", false, err
	}
	fl.Gen = s.Gen
	for {
		n, rerr := s.Body.Read(fl.buf)
		if n > 0 {
			watchdog.Reset(stall)
			if written+int64(n) > s.Size {
				return "", progressed, fmt.Errorf("%w: owner sent more than %d bytes", ErrMismatch, s.Size)
			}
			if err := fl.Sink.Append(fl.buf[:n]); err != nil {
				return "", progressed, err
			}
			written += int64(n)
			progressed = true
		}
		if errors.Is(rerr, io.EOF) {
			return s.End(), progressed, nil
		}
		if rerr != nil {
			if ctx.Err() != nil {
				return "", progressed, context.Cause(ctx)
			}
			return "", progressed, fmt.Errorf("%w: %w", errBroken, rerr)
		}
	}
}
