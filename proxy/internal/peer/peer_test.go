package peer

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

var blob = []byte("0123456789abcdef") // 16 bytes

// memSink is an in-memory local fill.
type memSink struct {
	mu       sync.Mutex
	size     int64
	data     []byte
	restarts int
}

func newSink() *memSink { return &memSink{size: -1} }

func (s *memSink) Progress() (int64, int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.size, int64(len(s.data))
}

func (s *memSink) SetSize(n int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.size >= 0 && s.size != n {
		return errSizeChanged
	}
	s.size = n
	return nil
}

var errSizeChanged = errors.New("size changed")

func (s *memSink) Append(p []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.data = append(s.data, p...)
	return nil
}

func (s *memSink) Restart() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.data = nil
	s.restarts++
	return nil
}

func (s *memSink) Matches() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return sha256.Sum256(s.data) == sha256.Sum256(blob)
}

// step is one part of a scripted body: bytes, a stall (nothing until the
// request ends), or the end with a trailer.
type step struct {
	data  []byte
	stall bool
}

// answer is the scripted reply to one Open.
type answer struct {
	err   error
	size  int64 // 0: len(blob)
	gen   string
	body  []step
	end   string
	shift int64 // answer from offset+shift (a misbehaving owner)
}

type opened struct {
	off int64
	gen string
}

// scriptSource answers Opens from a script and records them.
type scriptSource struct {
	answers []answer
	opens   []opened
}

func (s *scriptSource) Open(ctx context.Context, off int64, gen string) (*Stream, error) {
	s.opens = append(s.opens, opened{off, gen})
	if len(s.answers) == 0 {
		return nil, ErrNoStream
	}
	a := s.answers[0]
	s.answers = s.answers[1:]
	if a.err != nil {
		return nil, a.err
	}
	size := a.size
	if size == 0 {
		size = int64(len(blob))
	}
	pr, pw := io.Pipe()
	go func() {
		for _, st := range a.body {
			if st.stall {
				<-ctx.Done()
				pw.CloseWithError(ctx.Err())
				return
			}
			if _, err := pw.Write(st.data); err != nil {
				return
			}
		}
		pw.Close()
	}()
	return &Stream{Size: size, Offset: off + a.shift, Gen: a.gen, Body: pr, End: func() string { return a.end }}, nil
}

func part(from, to int) step { return step{data: blob[from:to]} }

var errDial = errors.New("connection refused")

func TestFollow(t *testing.T) {
	t.Parallel()
	wrong := append([]byte(nil), blob...)
	wrong[3] = 'X'
	for _, tc := range []struct {
		name     string
		answers  []answer
		want     error // nil: complete
		opens    []opened
		restarts int
	}{
		{name: "complete in one stream",
			answers: []answer{{gen: "0", body: []step{part(0, 8), part(8, 16)}, end: EndOK}},
			opens:   []opened{{0, ""}}},
		{name: "cut without trailer: resume from the offset, same generation",
			answers: []answer{{gen: "2", body: []step{part(0, 5)}}, {gen: "2", body: []step{part(5, 16)}, end: EndOK}},
			opens:   []opened{{0, ""}, {5, "2"}}},
		{name: "owner restarted mid-stream: local restart, again from zero",
			answers:  []answer{{gen: "0", body: []step{part(0, 5)}, end: EndRestarted}, {gen: "1", body: []step{part(0, 16)}, end: EndOK}},
			opens:    []opened{{0, ""}, {0, ""}},
			restarts: 1},
		{name: "owner restarted while cut off: 409, local restart",
			answers: []answer{{gen: "0", body: []step{part(0, 5)}}, {err: ErrGeneration},
				{gen: "1", body: []step{part(0, 16)}, end: EndOK}},
			opens:    []opened{{0, ""}, {5, "0"}, {0, ""}},
			restarts: 1},
		{name: "owner's download failed verification",
			answers: []answer{{gen: "0", body: []step{part(0, 5)}, end: EndDigest}},
			want:    ErrOwnerFailed, opens: []opened{{0, ""}}},
		{name: "owner's fill ended unverified",
			answers: []answer{{gen: "0", body: []step{part(0, 5)}, end: EndGone}},
			want:    ErrOwnerGone, opens: []opened{{0, ""}}},
		{name: "no stream at the owner",
			answers: []answer{{err: ErrNoStream}}, want: ErrOwnerGone, opens: []opened{{0, ""}}},
		{name: "wrong secret",
			answers: []answer{{err: ErrUnauthorized}}, want: ErrOwnerGone, opens: []opened{{0, ""}}},
		{name: "owner unreachable: bounded retries",
			answers: []answer{{err: errDial}, {err: errDial}, {err: errDial}},
			want:    ErrOwnerGone, opens: []opened{{0, ""}, {0, ""}, {0, ""}}},
		{name: "unreachable once, then streams",
			answers: []answer{{err: errDial}, {gen: "0", body: []step{part(0, 16)}, end: EndOK}},
			opens:   []opened{{0, ""}, {0, ""}}},
		{name: "owner hangs: the stall cuts the stream, resume",
			answers: []answer{{gen: "0", body: []step{part(0, 4), {stall: true}}}, {gen: "0", body: []step{part(4, 16)}, end: EndOK}},
			opens:   []opened{{0, ""}, {4, "0"}}},
		{name: "owner says ok but the bytes are wrong",
			answers: []answer{{gen: "0", body: []step{{data: wrong}}, end: EndOK}},
			want:    ErrMismatch, opens: []opened{{0, ""}}},
		{name: "owner sends more than the size",
			answers: []answer{{gen: "0", size: 8, body: []step{part(0, 16)}, end: EndOK}},
			want:    ErrMismatch, opens: []opened{{0, ""}}},
		{name: "owner says ok before the last byte",
			answers: []answer{{gen: "0", body: []step{part(0, 15)}, end: EndOK}},
			want:    ErrMismatch, opens: []opened{{0, ""}}},
		{name: "owner answers from another offset: broken, retried",
			answers: []answer{{gen: "0", body: []step{part(0, 5)}}, {gen: "0", shift: 1}, {gen: "0", body: []step{part(5, 16)}, end: EndOK}},
			opens:   []opened{{0, ""}, {5, "0"}, {5, "0"}}},
		{name: "size changes between streams",
			answers: []answer{{gen: "0", body: []step{part(0, 5)}}, {gen: "0", size: 20}},
			want:    errSizeChanged, opens: []opened{{0, ""}, {5, "0"}}},
		{name: "too many restarts",
			answers: []answer{{gen: "0", end: EndRestarted}, {gen: "1", end: EndRestarted}, {gen: "2", end: EndRestarted}},
			want:    ErrOwnerGone, opens: []opened{{0, ""}, {0, ""}, {0, ""}}, restarts: 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			synctest.Test(t, func(t *testing.T) {
				src := &scriptSource{answers: tc.answers}
				sink := newSink()
				fl := &Follower{Src: src, Sink: sink, Opts: Options{Retries: 3, Backoff: time.Second, Restarts: 2, Stall: 10 * time.Second, BufSize: 4}}
				err := fl.Follow(t.Context())
				if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
					t.Fatalf("Follow = %v, want %v", err, tc.want)
				}
				if tc.want == nil && !bytes.Equal(sink.data, blob) {
					t.Fatalf("sink holds %q", sink.data)
				}
				if len(src.opens) != len(tc.opens) {
					t.Fatalf("opens %v, want %v", src.opens, tc.opens)
				}
				for i := range tc.opens {
					if src.opens[i] != tc.opens[i] {
						t.Fatalf("opens %v, want %v", src.opens, tc.opens)
					}
				}
				if sink.restarts != tc.restarts {
					t.Fatalf("%d local restarts, want %d", sink.restarts, tc.restarts)
				}
			})
		})
	}
}

// pipeSource hands the test the writing end of each stream.
type pipeSource struct {
	streams chan *io.PipeWriter
	end     string
}

func (s *pipeSource) Open(ctx context.Context, off int64, gen string) (*Stream, error) {
	pr, pw := io.Pipe()
	s.streams <- pw
	return &Stream{Size: int64(len(blob)), Offset: off, Gen: "0", Body: pr, End: func() string { return s.end }}, nil
}

// TestFollowStepByStep: every byte the owner sends is in the local fill at
// once (so its clients get it), the size before any byte, and Follow ends
// only with the owner's trailer.
func TestFollowStepByStep(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		src := &pipeSource{streams: make(chan *io.PipeWriter, 1)}
		sink := newSink()
		fl := &Follower{Src: src, Sink: sink, Opts: Options{Retries: 3, Backoff: time.Second, Stall: time.Minute}}
		done := make(chan error, 1)
		go func() { done <- fl.Follow(t.Context()) }()
		pw := <-src.streams
		synctest.Wait()
		if size, written := sink.Progress(); size != 16 || written != 0 {
			t.Fatalf("after the headers: size %d written %d", size, written)
		}
		for i, n := range []int{3, 7, 15} {
			from := []int{0, 3, 7}[i]
			_, _ = pw.Write(blob[from:n])
			synctest.Wait()
			if _, written := sink.Progress(); written != int64(n) {
				t.Fatalf("after %d bytes sent: %d written", n, written)
			}
			select {
			case err := <-done:
				t.Fatalf("Follow ended early: %v", err)
			default:
			}
		}
		// The owner releases the last byte after verifying, then ends with
		// the trailer.
		_, _ = pw.Write(blob[15:])
		src.end = EndOK
		pw.Close()
		synctest.Wait()
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
		default:
			t.Fatal("Follow did not end after the trailer")
		}
	})
}
