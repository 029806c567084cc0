package cluster

import (
	"context"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
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

// client returns a client whose every connection goes to h, its commands
// bounded by timeout. The client and then h are closed when the test ends
// (inside a synctest bubble: before the bubble exits).
func (h *hangingRedis) client(t *testing.T, timeout time.Duration) *redis.Client {
	t.Helper()
	opt := clientOptions("127.0.0.1:1", "", 0, timeout) // an IP: no DNS inside a bubble
	opt.Dialer = h.dial
	c := redis.NewClient(opt)
	t.Cleanup(h.close)
	t.Cleanup(func() { _ = c.Close() })
	return c
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
