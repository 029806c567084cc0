package upstream

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"syscall"
)

// dialGuard closes the gap between the redirect policy's address check and
// the connection (DNS rebinding): when Stowage connects directly (no forward
// proxy), every connection to a host that is not one of the upstream's own
// endpoints is checked again at connect time, on the address really dialed.
// An upstream marked Internal is not guarded.
type dialGuard struct {
	dialer  *net.Dialer
	guarded *net.Dialer
	allowed map[string]bool // endpoint host names
}

func newDialGuard(d *net.Dialer, endpoints []string) *dialGuard {
	g := &dialGuard{dialer: d, allowed: map[string]bool{}}
	for _, e := range endpoints {
		if u, err := url.Parse(e); err == nil {
			g.allowed[u.Hostname()] = true
		}
	}
	guarded := *d
	guarded.ControlContext = g.control
	g.guarded = &guarded
	return g
}

// DialContext dials endpoints as configured and everything else guarded.
func (g *dialGuard) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	host, _, err := net.SplitHostPort(addr)
	if err == nil && g.allowed[host] {
		return g.dialer.DialContext(ctx, network, addr)
	}
	return g.guarded.DialContext(ctx, network, addr)
}

// control refuses a connection to an internal address.
func (g *dialGuard) control(_ context.Context, _, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("%w: unparsable dial address %q", ErrForbiddenAddress, address)
	}
	return checkAddr(ap.Addr().String(), ap.Addr())
}

// directConnections reports whether an upstream connects without a forward
// proxy: "direct", or no proxy configured and none in the environment.
func directConnections(proxy string) bool {
	if proxy == "direct" {
		return true
	}
	if proxy != "" {
		return false
	}
	for _, v := range []string{"HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"} {
		if os.Getenv(v) != "" {
			return false
		}
	}
	return true
}
