package fill

import (
	"context"
	"errors"
	"io"
	"sync"
	"testing"
	"testing/synctest"

	"github.com/opencontainers/go-digest"
)

// peerClient reads a PeerReader in a goroutine, recording bytes and the end.
type peerClient struct {
	mu  sync.Mutex
	n   int64
	err error
	eof bool
}

func (c *peerClient) get() (int64, error, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n, c.err, c.eof
}

func readPeer(ctx context.Context, h *Hold, size, off int64, gen int) *peerClient {
	c := &peerClient{}
	r := h.PeerReader(ctx, size, off, gen)
	go func() {
		defer r.Close()
		buf := make([]byte, 16)
		for {
			n, err := r.Read(buf)
			c.mu.Lock()
			c.n += int64(n)
			if errors.Is(err, io.EOF) {
				c.eof = true
			} else if err != nil {
				c.err = err
			}
			c.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	return c
}

// TestPeerReaderSteps: a peer reader is pinned to the generation its
// follower's bytes belong to, holds the last byte back until the download
// is verified and done, and a fill that is done can no longer be joined.
func TestPeerReaderSteps(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		reg := NewRegistry()
		defer reg.Close()
		sc := &script{cmds: make(chan func(*Fill) (bool, error))}
		d := digest.FromString("peer")
		own, _, err := reg.Join(Start{Digest: d, Host: "h", Repo: "r", Run: sc.run})
		if err != nil {
			t.Fatal(err)
		}
		defer own.Release()
		f := own.Fill()
		send := func(c func(*Fill) (bool, error)) { sc.cmds <- c; synctest.Wait() }
		bytes := func(n int64) {
			send(func(f *Fill) (bool, error) {
				_, w := f.Progress()
				return false, f.Append(make([]byte, n-w))
			})
		}
		send(func(f *Fill) (bool, error) { return false, f.SetSize(100) })
		bytes(40)
		join := func() *Hold {
			h, ok := f.Join()
			if !ok {
				t.Fatal("Join on a running fill failed")
			}
			return h
		}
		check := func(what string, c *peerClient, n int64, wantErr error, eof bool) {
			t.Helper()
			gn, gerr, geof := c.get()
			if gn != n || !errors.Is(gerr, wantErr) || (wantErr == nil && gerr != nil) || geof != eof {
				t.Fatalf("%s: %d bytes err %v eof %v, want %d %v %v", what, gn, gerr, geof, n, wantErr, eof)
			}
		}

		old := readPeer(t.Context(), join(), 100, 10, 0) // resumes at 10 in generation 0
		stale := readPeer(t.Context(), join(), 100, 10, 1)
		synctest.Wait()
		check("gen-0 reader from 10", old, 30, nil, false)
		check("reader of another generation", stale, 0, ErrRestarted, false)

		send(func(f *Fill) (bool, error) { return false, f.Restart() })
		check("gen-0 reader after the restart", old, 30, ErrRestarted, false)
		if g := f.Generation(); g != 1 {
			t.Fatalf("generation %d after a restart", g)
		}
		fresh := readPeer(t.Context(), join(), 100, 0, 1)
		bytes(100)
		check("gen-1 reader before verification", fresh, 99, nil, false)
		send(func(f *Fill) (bool, error) { f.MarkVerified(); return false, nil })
		check("verified but not done", fresh, 99, nil, false)
		send(func(*Fill) (bool, error) { return true, nil })
		check("done", fresh, 100, nil, true)
		if _, ok := f.Join(); ok {
			t.Fatal("Join on a finished fill succeeded")
		}
	})
}
