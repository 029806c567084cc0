package takeover

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
)

// Verdict is what Decide says about a dead owner's staging file.
type Verdict int

const (
	// Adopt: compare the held prefix, then append the file's further bytes.
	Adopt Verdict = iota
	// NothingNew: the file holds no byte past what the taker has.
	NothingNew
	// TooLong: the file is longer than the blob; it cannot be a prefix.
	TooLong
)

func (v Verdict) String() string {
	switch v {
	case Adopt:
		return "adopt"
	case NothingNew:
		return "nothing new"
	case TooLong:
		return "longer than the blob"
	}
	return fmt.Sprintf("verdict(%d)", int(v))
}

// Decide judges a staged file of staged bytes for a taker that holds have
// bytes of a blob of size bytes (-1: unknown).
func Decide(size, have, staged int64) Verdict {
	switch {
	case size >= 0 && staged > size:
		return TooLong
	case staged <= have:
		return NothingNew
	}
	return Adopt
}

// Sink is the taker's fill: its staged bytes and an append that hashes.
type Sink interface {
	Progress() (size, written int64)
	ReadAt(p []byte, off int64) (int, error)
	Append(p []byte) error
}

// ErrDiverged: the staged file does not begin with the bytes the taker
// holds (the owner restarted its download after streaming them); nothing
// was adopted.
var ErrDiverged = errors.New("takeover: the dead owner's staged bytes differ from the streamed ones")

// AdoptFrom appends the bytes of src (a dead owner's staging file of n
// bytes) past what sink holds, after checking that src begins with them.
// It returns how many bytes it appended; on an error after some were
// appended they stay (a consistent prefix, verified by the final digest
// check like any other). buf is the copy buffer.
func AdoptFrom(ctx context.Context, src io.ReaderAt, n int64, sink Sink, buf []byte) (int64, error) {
	size, have := sink.Progress()
	if v := Decide(size, have, n); v != Adopt {
		return 0, nil
	}
	if len(buf) < 2 {
		return 0, errors.New("takeover: buffer too small")
	}
	half := len(buf) / 2
	mine, theirs := buf[:half], buf[half:2*half]
	for off := int64(0); off < have; {
		if err := ctx.Err(); err != nil {
			return 0, context.Cause(ctx)
		}
		k := min(int64(half), have-off)
		if _, err := sink.ReadAt(mine[:k], off); err != nil && !errors.Is(err, io.EOF) {
			return 0, fmt.Errorf("takeover: read own staging: %w", err)
		}
		if got, err := src.ReadAt(theirs[:k], off); int64(got) < k {
			return 0, fmt.Errorf("takeover: read the dead owner's staging at %d: %w", off, errOr(err))
		}
		if !bytes.Equal(mine[:k], theirs[:k]) {
			return 0, ErrDiverged
		}
		off += k
	}
	var adopted int64
	for off := have; off < n; {
		if err := ctx.Err(); err != nil {
			return adopted, context.Cause(ctx)
		}
		k := min(int64(len(buf)), n-off)
		got, err := src.ReadAt(buf[:k], off)
		if got > 0 {
			if aerr := sink.Append(buf[:got]); aerr != nil {
				return adopted, aerr
			}
			adopted += int64(got)
			off += int64(got)
		}
		if int64(got) < k {
			if errors.Is(err, io.EOF) {
				return adopted, nil // truncated meanwhile: keep what was read
			}
			return adopted, fmt.Errorf("takeover: read the dead owner's staging at %d: %w", off, errOr(err))
		}
	}
	return adopted, nil
}

func errOr(err error) error {
	if err == nil {
		return io.ErrUnexpectedEOF
	}
	return err
}

// Action is what a download does when its complete bytes do not hash to
// the digest.
type Action int

const (
	// Fail the fill: the upstream's own bytes are wrong.
	Fail Action = iota
	// Restart from zero: inherited bytes may be the wrong ones.
	Restart
)

// OnMismatch decides for a download that inherited inherited bytes (streamed
// or adopted, 0: none) and has or has not restarted for that already.
func OnMismatch(inherited int64, restarted bool) Action {
	if inherited > 0 && !restarted {
		return Restart
	}
	return Fail
}
