package fill

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/opencontainers/go-digest"
)

// memFile is an in-memory staging file.
type memFile struct {
	mu     sync.Mutex
	b      []byte
	closed bool
}

func (m *memFile) ReadAt(p []byte, off int64) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if off >= int64(len(m.b)) {
		return 0, io.EOF
	}
	n := copy(p, m.b[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (m *memFile) WriteAt(p []byte, off int64) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if need := off + int64(len(p)); need > int64(len(m.b)) {
		m.b = append(m.b, make([]byte, need-int64(len(m.b)))...)
	}
	return copy(m.b[off:], p), nil
}

func (m *memFile) Truncate(n int64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.b = m.b[:n]
	return nil
}

func (m *memFile) Sync() error { return nil }

func (m *memFile) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closed = true
	return nil
}

// script drives a fill's download step by step: each command is applied
// by the download goroutine.
type script struct {
	cmds chan func(f *Fill) (end bool, err error)
}

func (s *script) run(ctx context.Context, f *Fill) error {
	f.Attach(&memFile{})
	for {
		select {
		case c := <-s.cmds:
			if end, err := c(f); end {
				return err
			}
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	}
}

// client reads a fill in a goroutine and records what it saw.
type client struct {
	mu   sync.Mutex
	n    int
	err  error
	done bool
	stop context.CancelFunc
}

func (c *client) state() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case !c.done:
		return strconv.Itoa(c.n)
	case c.err == nil:
		return "eof " + strconv.Itoa(c.n)
	default:
		return "err " + c.err.Error()
	}
}

// TestFillSteps runs sequences of events against one fill and checks what
// every reader sees after each step. Readers: "join NAME [verified] [at N]";
// download: "size N", "bytes N", "restart", "verify", "end", "end fail",
// "cached"; "leave NAME", "cancel".
func TestFillSteps(t *testing.T) {
	type step struct {
		do   string
		want map[string]string // reader -> "N" bytes so far, "eof N", "err ..."
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"last byte waits for verification", []step{
			{"join a", nil},
			{"size 100", nil},
			{"bytes 100", map[string]string{"a": "99"}},
			{"verify", map[string]string{"a": "99"}},
			{"end", map[string]string{"a": "eof 100"}},
		}},
		{"mismatch cuts every reader short", []step{
			{"join a", nil},
			{"size 100", nil},
			{"bytes 100", map[string]string{"a": "99"}},
			{"end fail", map[string]string{"a": "err mismatch"}},
		}},
		{"restart fails readers that delivered bytes", []step{
			{"join a", nil},
			{"size 100", nil},
			{"bytes 40", map[string]string{"a": "40"}},
			{"join b", map[string]string{"a": "40", "b": "40"}},
			{"join c verified", map[string]string{"c": "0"}},
			{"restart", map[string]string{"a": "err " + ErrRestarted.Error(), "b": "err " + ErrRestarted.Error(), "c": "0"}},
			{"join d", map[string]string{"d": "0"}},
			{"bytes 100", map[string]string{"d": "99", "c": "0"}},
			{"verify", nil},
			{"end", map[string]string{"d": "eof 100", "c": "eof 100"}},
		}},
		{"restart before any byte was read is harmless", []step{
			{"size 100", nil},
			{"join a at 50", map[string]string{"a": "0"}},
			{"bytes 30", map[string]string{"a": "0"}},
			{"restart", map[string]string{"a": "0"}},
			{"bytes 100", map[string]string{"a": "49"}},
			{"verify", nil},
			{"end", map[string]string{"a": "eof 50"}},
		}},
		{"closed range waits for verified bytes", []step{
			{"join a verified", nil},
			{"size 100", nil},
			{"bytes 100", map[string]string{"a": "0"}},
			{"end fail", map[string]string{"a": "err mismatch"}},
		}},
		{"verified bytes survive a failed commit", []step{
			{"join a", nil},
			{"size 100", nil},
			{"bytes 100", nil},
			{"verify", map[string]string{"a": "99"}},
			{"end fail", map[string]string{"a": "eof 100"}},
		}},
		{"cached publishes no size and no bytes", []step{
			{"join a", nil},
			{"cached", map[string]string{"a": "cached"}},
			{"end", map[string]string{"a": "cached"}},
		}},
		{"a reader joining a cached fill goes to the store too", []step{
			{"cached", nil},
			{"join b", map[string]string{"b": "cached"}},
			{"end", map[string]string{"b": "cached"}},
		}},
		{"size change does not publish the new size", []step{
			{"size 100", nil},
			{"size 200", nil},
			{"join a", nil},
			{"bytes 100", map[string]string{"a": "99"}},
			{"verify", nil},
			{"end", map[string]string{"a": "eof 100"}},
		}},
		{"a reader that leaves does not stop the fill", []step{
			{"join a", nil},
			{"join b", nil},
			{"size 100", nil},
			{"bytes 50", map[string]string{"a": "50", "b": "50"}},
			{"leave a", map[string]string{"a": "err context canceled"}},
			{"bytes 100", map[string]string{"b": "99"}},
			{"verify", nil},
			{"end", map[string]string{"b": "eof 100"}},
		}},
		{"cancel cuts readers short", []step{
			{"join a", nil},
			{"size 100", nil},
			{"bytes 50", map[string]string{"a": "50"}},
			{"cancel", map[string]string{"a": "err " + ErrCancelled.Error()}},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				reg := NewRegistry()
				defer reg.Close()
				sc := &script{cmds: make(chan func(*Fill) (bool, error))}
				d := digest.FromString(tt.name)
				start := Start{Digest: d, Host: "h", Repo: "r", Run: sc.run}
				hold, _, err := reg.Join(start) // the test's own hold starts the fill
				if err != nil {
					t.Fatal(err)
				}
				clients := map[string]*client{}
				var mu sync.Mutex
				cachedSeen := map[string]bool{}
				send := func(c func(*Fill) (bool, error)) { sc.cmds <- c }
				for i, s := range tt.steps {
					f := strings.Fields(s.do)
					switch f[0] {
					case "join":
						h, _, err := reg.Join(start)
						if err != nil {
							t.Fatal(err)
						}
						name := f[1]
						verified := strings.Contains(s.do, "verified")
						var at int64
						if j := strings.Index(s.do, " at "); j >= 0 {
							at, _ = strconv.ParseInt(s.do[j+4:], 10, 64)
						}
						ctx, stop := context.WithCancel(t.Context())
						c := &client{stop: stop}
						clients[name] = c
						go func() {
							size, cached, err := h.Fill().WaitSize(ctx)
							if cached {
								h.Release()
								mu.Lock()
								cachedSeen[name] = true
								mu.Unlock()
								return
							}
							if err != nil {
								h.Release()
								c.mu.Lock()
								c.done, c.err = true, err
								c.mu.Unlock()
								return
							}
							r := h.Reader(ctx, size, verified)
							defer r.Close()
							_, _ = r.Seek(at, io.SeekStart)
							buf := make([]byte, 7)
							for {
								n, err := r.Read(buf)
								c.mu.Lock()
								c.n += n
								if err != nil {
									c.done = true
									if !errors.Is(err, io.EOF) {
										c.err = err
									}
								}
								c.mu.Unlock()
								if err != nil {
									return
								}
							}
						}()
					case "size":
						n, _ := strconv.ParseInt(f[1], 10, 64)
						send(func(f *Fill) (bool, error) { return false, f.SetSize(n) })
					case "bytes":
						n, _ := strconv.ParseInt(f[1], 10, 64)
						send(func(f *Fill) (bool, error) {
							_, w := f.Progress()
							if n > w {
								return false, f.Append(make([]byte, n-w))
							}
							return false, nil
						})
					case "restart":
						send(func(f *Fill) (bool, error) { return false, f.Restart() })
					case "verify":
						send(func(f *Fill) (bool, error) { f.MarkVerified(); return false, nil })
					case "cached":
						send(func(f *Fill) (bool, error) { f.MarkCached(); return false, nil })
					case "end":
						var err error
						if len(f) > 1 {
							err = errors.New("mismatch")
						}
						send(func(*Fill) (bool, error) { return true, err })
					case "leave":
						clients[f[1]].stop()
					case "cancel":
						reg.Cancel(d)
					default:
						t.Fatalf("unknown step %q", s.do)
					}
					synctest.Wait()
					for name, want := range s.want {
						mu.Lock()
						cs := cachedSeen[name]
						mu.Unlock()
						got := clients[name].state()
						if cs {
							got = "cached"
						}
						if got != want {
							t.Fatalf("step %d %q: reader %s = %q, want %q", i, s.do, name, got, want)
						}
					}
				}
				hold.Release()
				for _, c := range clients {
					c.stop()
				}
				if len(reg.List()) > 0 {
					reg.Cancel(d)
				}
				synctest.Wait()
			})
		})
	}
}

// TestFileClosedAfterLastReader: the staging file stays open while any
// reader holds it and closes after the download and every reader let go.
func TestFileClosedAfterLastReader(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		reg := NewRegistry()
		defer reg.Close()
		mf := &memFile{}
		proceed := make(chan struct{})
		run := func(ctx context.Context, f *Fill) error {
			f.Attach(mf)
			_ = f.SetSize(3)
			_ = f.Append([]byte("abc"))
			f.MarkVerified()
			<-proceed
			return nil
		}
		h, started, err := reg.Join(Start{Digest: digest.FromString("x"), Run: run})
		if err != nil || !started {
			t.Fatal(started, err)
		}
		synctest.Wait()
		close(proceed)
		synctest.Wait()
		if mf.closed {
			t.Fatal("file closed while a hold is out")
		}
		r := h.Reader(t.Context(), 3, false)
		b, err := io.ReadAll(r)
		if string(b) != "abc" || err != nil {
			t.Fatalf("%q %v", b, err)
		}
		_ = r.Close()
		if !mf.closed {
			t.Fatal("file still open after the last reader")
		}
	})
}

// TestUnwanted: a fill with no hold, reader or follower reports for how
// long it has been unwanted.
func TestUnwanted(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		reg := NewRegistry()
		defer reg.Close()
		run := func(ctx context.Context, f *Fill) error {
			<-ctx.Done()
			return context.Cause(ctx)
		}
		d := digest.FromString("u")
		h, _, _ := reg.Join(Start{Digest: d, Run: run})
		f := h.Fill()
		if u, _ := f.Unwanted(); u {
			t.Fatal("unwanted while held")
		}
		h.Release()
		time.Sleep(time.Minute)
		if u, dur := f.Unwanted(); !u || dur != time.Minute {
			t.Fatalf("unwanted %v for %s", u, dur)
		}
		h2, started, _ := reg.Join(Start{Digest: d, Run: run})
		if started {
			t.Fatal("joined a new fill")
		}
		if u, _ := f.Unwanted(); u {
			t.Fatal("unwanted after a join")
		}
		done := make(chan error)
		go func() { done <- h2.Follow(t.Context(), nil) }()
		synctest.Wait()
		if list := reg.List(); len(list) != 1 || list[0].Clients != 1 {
			t.Fatalf("list %+v", list)
		}
		reg.Cancel(d)
		if err := <-done; !errors.Is(err, ErrCancelled) {
			t.Fatal(fmt.Sprint(err))
		}
	})
}
