package cluster

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"testing"
)

// hangingRedis is a "Redis" that accepts every connection and never
// answers (it reads and discards what it is sent): the partitioned or
// stopped server a real Redis cannot be made into on demand. Its
// connections are in-memory pipes, so it works inside a synctest bubble.
type hangingRedis struct {
	dials atomic.Int32
	read  atomic.Int64
	mu    sync.Mutex
	conns []net.Conn
	wg    sync.WaitGroup
}

func (h *hangingRedis) dial(context.Context, string, string) (net.Conn, error) {
	h.dials.Add(1)
	client, server := net.Pipe()
	h.mu.Lock()
	h.conns = append(h.conns, client, server)
	h.mu.Unlock()
	h.wg.Go(func() {
		buf := make([]byte, 4096)
		for {
			n, err := server.Read(buf)
			h.read.Add(int64(n))
			if err != nil {
				return
			}
		}
	})
	return client, nil
}

// close ends every connection and waits for the readers.
func (h *hangingRedis) close() {
	h.mu.Lock()
	for _, c := range h.conns {
		_ = c.Close()
	}
	h.mu.Unlock()
	h.wg.Wait()
}

// freezableProxy forwards TCP connections to a real Redis until frozen;
// frozen, it keeps the connections open and forwards nothing (a Redis
// that hangs mid-session, e.g. SIGSTOP or a partition).
type freezableProxy struct {
	ln     net.Listener
	target string
	frozen atomic.Bool
	dials  atomic.Int32
	mu     sync.Mutex
	conns  []net.Conn
	wg     sync.WaitGroup
}

func newFreezableProxy(t *testing.T, target string) *freezableProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &freezableProxy{ln: ln, target: target}
	p.wg.Go(p.accept)
	t.Cleanup(p.close)
	return p
}

func (p *freezableProxy) addr() string { return p.ln.Addr().String() }

func (p *freezableProxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.dials.Add(1)
		u, err := net.Dial("tcp", p.target)
		if err != nil {
			_ = c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, c, u)
		p.mu.Unlock()
		p.wg.Go(func() { p.pipe(u, c) })
		p.wg.Go(func() { p.pipe(c, u) })
	}
}

// pipe copies src to dst, dropping everything while frozen.
func (p *freezableProxy) pipe(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && !p.frozen.Load() {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				_ = dst.Close()
			}
			return
		}
	}
}

func (p *freezableProxy) close() {
	_ = p.ln.Close()
	p.mu.Lock()
	for _, c := range p.conns {
		_ = c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// countingHandler counts log records by level.
type countingHandler struct {
	warns, infos atomic.Int32
}

func (h *countingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *countingHandler) Handle(_ context.Context, r slog.Record) error {
	switch r.Level {
	case slog.LevelWarn:
		h.warns.Add(1)
	case slog.LevelInfo:
		h.infos.Add(1)
	}
	return nil
}
func (h *countingHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *countingHandler) WithGroup(string) slog.Handler      { return h }

func slogNew(h slog.Handler) *slog.Logger { return slog.New(h) }
