package takeover

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"
	"testing/synctest"
	"time"
)

// memSink is a taker's fill in memory.
type memSink struct {
	size    int64
	data    []byte
	failAt  int // Append fails once len(data) would pass it (0: never)
	appends int
}

func (s *memSink) Progress() (int64, int64) { return s.size, int64(len(s.data)) }

func (s *memSink) ReadAt(p []byte, off int64) (int, error) {
	if off >= int64(len(s.data)) {
		return 0, io.EOF
	}
	n := copy(p, s.data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

var errDiskFull = errors.New("disk full")

func (s *memSink) Append(p []byte) error {
	if s.failAt > 0 && len(s.data)+len(p) > s.failAt {
		return errDiskFull
	}
	s.appends++
	s.data = append(s.data, p...)
	return nil
}

// slowSrc is a dead owner's staging file on a slow disk: every read takes
// pause (fake time under synctest); truncate shortens it after the first
// read (a file cut while being adopted).
type slowSrc struct {
	data     []byte
	pause    time.Duration
	truncate int
	reads    int
	fail     error // every read past the first fails with it
}

func (s *slowSrc) ReadAt(p []byte, off int64) (int, error) {
	time.Sleep(s.pause)
	s.reads++
	if s.fail != nil && s.reads > 1 {
		return 0, s.fail
	}
	data := s.data
	if s.truncate > 0 && s.reads > 1 {
		data = data[:s.truncate]
	}
	if off >= int64(len(data)) {
		return 0, io.EOF
	}
	n := copy(p, data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func blob(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + 3)
	}
	return b
}

func TestDecide(t *testing.T) {
	for _, tc := range []struct {
		size, have, staged int64
		want               Verdict
	}{
		{-1, 0, 100, Adopt},         // nothing streamed, size unknown
		{200, 50, 100, Adopt},       // staged more than streamed
		{200, 0, 200, Adopt},        // the owner had every byte, not yet committed
		{200, 100, 100, NothingNew}, // streamed as much as staged
		{200, 150, 100, NothingNew}, // streamed more (the owner's tail was lost)
		{-1, 0, 0, NothingNew},      // an empty file
		{200, 0, 201, TooLong},      // cannot be a prefix of the blob
		{200, 250, 300, TooLong},    // even when it is longer than what is held
		{-1, 10, 1 << 40, Adopt},    // size unknown: the upstream's answer bounds it later
		{1 << 40, 1 << 39, 1 << 40, Adopt},
	} {
		if got := Decide(tc.size, tc.have, tc.staged); got != tc.want {
			t.Errorf("Decide(size %d, have %d, staged %d) = %s, want %s", tc.size, tc.have, tc.staged, got, tc.want)
		}
	}
}

// TestAdoptFrom runs each adoption step by step in a synctest bubble: the
// slow disk's pauses and the caller's deadline are fake time, so a row's
// outcome never depends on the machine's speed.
func TestAdoptFrom(t *testing.T) {
	full := blob(1000)
	diverged := append([]byte(nil), full...)
	diverged[10] ^= 0xff
	for _, tc := range []struct {
		name     string
		size     int64
		have     int    // bytes the taker streamed before
		src      []byte // the dead owner's staging file
		pause    time.Duration
		deadline time.Duration // 0: none
		truncate int
		failRead error
		failAt   int
		buf      int
		// want: the sink holds full[:wantLen] (and nothing else) and the
		// error is wantErr (nil: none).
		wantLen     int
		wantAdopted int64
		wantErr     error
	}{
		{name: "nothing held, adopt all", size: -1, src: full[:600], buf: 64, wantLen: 600, wantAdopted: 600},
		{name: "streamed prefix, adopt the rest", size: 1000, have: 300, src: full[:700], buf: 64, wantLen: 700, wantAdopted: 400},
		{name: "whole blob staged", size: 1000, have: 999, src: full, buf: 64, wantLen: 1000, wantAdopted: 1},
		{name: "staged less than streamed", size: 1000, have: 500, src: full[:400], buf: 64, wantLen: 500},
		{name: "longer than the blob", size: 500, src: full[:600], buf: 64, wantLen: 0},
		{name: "owner restarted after streaming: diverged prefix", size: 1000, have: 300, src: diverged[:800], buf: 64, wantLen: 300, wantErr: ErrDiverged},
		{name: "difference only past the held prefix is adopted (the digest decides)", size: 1000, have: 5, src: diverged[:800], buf: 64, wantLen: -1, wantAdopted: 795},
		{name: "file truncated while adopted", size: -1, src: full[:600], truncate: 100, buf: 64, wantLen: 100, wantAdopted: 100},
		{name: "read error keeps the consistent prefix", size: -1, src: full[:600], failRead: io.ErrClosedPipe, buf: 64, wantLen: 64, wantAdopted: 64, wantErr: io.ErrClosedPipe},
		{name: "own disk full", size: -1, src: full[:600], failAt: 200, buf: 64, wantLen: 192, wantAdopted: 192, wantErr: errDiskFull},
		{name: "slow disk past the deadline", size: -1, src: full[:600], pause: time.Second, deadline: 3500 * time.Millisecond, buf: 64, wantLen: 256, wantAdopted: 256, wantErr: context.DeadlineExceeded},
		{name: "deadline while comparing the prefix", size: 1000, have: 500, src: full[:900], pause: time.Second, deadline: 1500 * time.Millisecond, buf: 64, wantLen: 500, wantErr: context.DeadlineExceeded},
		{name: "buffer too small", size: -1, src: full[:10], buf: 1, wantLen: 0, wantErr: errAny},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				ctx := t.Context()
				if tc.deadline > 0 {
					var cancel context.CancelFunc
					ctx, cancel = context.WithTimeout(ctx, tc.deadline)
					defer cancel()
				}
				sink := &memSink{size: tc.size, data: append([]byte(nil), full[:tc.have]...), failAt: tc.failAt}
				src := &slowSrc{data: tc.src, pause: tc.pause, truncate: tc.truncate, fail: tc.failRead}
				n, err := AdoptFrom(ctx, src, int64(len(tc.src)), sink, make([]byte, tc.buf))
				switch {
				case errors.Is(tc.wantErr, errAny):
					if err == nil {
						t.Fatalf("no error")
					}
				case !errors.Is(err, tc.wantErr):
					t.Fatalf("err %v, want %v", err, tc.wantErr)
				}
				if n != tc.wantAdopted {
					t.Errorf("adopted %d, want %d", n, tc.wantAdopted)
				}
				want := full[:max(tc.wantLen, 0)]
				if tc.wantLen < 0 { // the source's own bytes
					want = tc.src
				}
				if !bytes.Equal(sink.data, want) {
					t.Errorf("sink holds %d bytes, want %d (equal prefix: %v)", len(sink.data), len(want), bytes.HasPrefix(sink.data, want[:min(len(want), len(sink.data))]))
				}
			})
		})
	}
}

var errAny = errors.New("any error")

func TestOnMismatch(t *testing.T) {
	for _, tc := range []struct {
		inherited int64
		restarted bool
		want      Action
	}{
		{0, false, Fail},    // the upstream's own bytes are wrong
		{1, false, Restart}, // one streamed or adopted byte may be the culprit
		{1 << 30, false, Restart},
		{1, true, Fail}, // restarted once already: from zero the upstream alone decides
		{0, true, Fail},
	} {
		if got := OnMismatch(tc.inherited, tc.restarted); got != tc.want {
			t.Errorf("OnMismatch(%d, %v) = %d, want %d", tc.inherited, tc.restarted, got, tc.want)
		}
	}
}
