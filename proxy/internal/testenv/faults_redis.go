package testenv

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"testing"
)

// FreezableTCP forwards TCP connections on a loopback listener to target
// (a real Redis) until frozen. Frozen, it keeps accepting connections and
// holds every byte without forwarding it, as the kernel does for a
// SIGSTOPped or partitioned server, which a real Redis cannot be made into
// on demand; Thaw delivers what was held and forwards again.
type FreezableTCP struct {
	ln      net.Listener
	target  string
	accepts atomic.Int32

	mu    sync.Mutex
	thaw  chan struct{} // non-nil while frozen; closed by Thaw
	conns []net.Conn
	wg    sync.WaitGroup
}

// NewFreezableTCP starts forwarding to target; it stops when t ends.
func NewFreezableTCP(t testing.TB, target string) *FreezableTCP {
	t.Helper()
	ln, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &FreezableTCP{ln: ln, target: target}
	p.wg.Go(p.accept)
	t.Cleanup(p.close)
	return p
}

// Addr is the listener's host:port.
func (p *FreezableTCP) Addr() string { return p.ln.Addr().String() }

// Accepts is the number of connections accepted so far.
func (p *FreezableTCP) Accepts() int { return int(p.accepts.Load()) }

// Freeze stops forwarding.
func (p *FreezableTCP) Freeze() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.thaw == nil {
		p.thaw = make(chan struct{})
	}
}

// Thaw forwards again, starting with what was held.
func (p *FreezableTCP) Thaw() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.thaw != nil {
		close(p.thaw)
		p.thaw = nil
	}
}

// waitThawed blocks while frozen.
func (p *FreezableTCP) waitThawed() {
	p.mu.Lock()
	ch := p.thaw
	p.mu.Unlock()
	if ch != nil {
		<-ch
	}
}

func (p *FreezableTCP) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.accepts.Add(1)
		u, err := (&net.Dialer{}).DialContext(context.Background(), "tcp", p.target)
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

// pipe copies src to dst, holding the bytes while frozen.
func (p *FreezableTCP) pipe(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.waitThawed()
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

func (p *FreezableTCP) close() {
	_ = p.ln.Close()
	p.Thaw()
	p.mu.Lock()
	for _, c := range p.conns {
		_ = c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}
