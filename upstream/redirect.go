package upstream

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// errRedirectRefused marks a redirect the client will not follow.
var errRedirectRefused = errors.New("upstream: redirect refused")

// redirectPolicy is the http.Client CheckRedirect of the client. Blob
// downloads are commonly redirected to a CDN; the policy
//   - bounds the hop count,
//   - allows only http and https targets,
//   - refuses targets on loopback, private, link-local and unspecified
//     addresses (ErrForbiddenAddress) unless the upstream is configured
//     Internal. Without a
//     forward proxy the target host is resolved to check its addresses;
//     with one, the proxy resolves names, so only IP literals and
//     "localhost" are checked.
//
// Authorization is never forwarded to another host: the auth layer adds it
// only for the upstream's own endpoints.
type redirectPolicy struct {
	max      int
	internal bool
	proxy    proxyFunc
	resolver *net.Resolver
}

func (p *redirectPolicy) check(req *http.Request, via []*http.Request) error {
	if len(via) > p.max {
		return fmt.Errorf("%w: more than %d redirects", errRedirectRefused, p.max)
	}
	if req.URL.Scheme != "http" && req.URL.Scheme != "https" {
		return fmt.Errorf("%w: scheme %q not allowed", errRedirectRefused, req.URL.Scheme)
	}
	if p.internal {
		return nil
	}
	host := req.URL.Hostname()
	if ip, err := netip.ParseAddr(host); err == nil {
		return checkAddr(host, ip)
	}
	if loopbackName(host) {
		return fmt.Errorf("%w: target %s is a loopback name", ErrForbiddenAddress, host)
	}
	if pu, err := p.proxy(req); err == nil && pu != nil {
		return nil // the proxy resolves the name
	}
	addrs, err := p.resolver.LookupNetIP(req.Context(), "ip", host)
	if err != nil {
		return fmt.Errorf("%w: resolving redirect target %s: %w", ErrUnavailable, host, err)
	}
	for _, ip := range addrs {
		if err := checkAddr(host, ip); err != nil {
			return err
		}
	}
	return nil
}

// checkAddr refuses an internal address with ErrForbiddenAddress.
func checkAddr(host string, ip netip.Addr) error {
	if internalAddr(ip) {
		return fmt.Errorf("%w: target %s is an internal address", ErrForbiddenAddress, host)
	}
	return nil
}

// internalAddr reports loopback, private, link-local, unspecified,
// interface-local and shared (CGNAT) addresses.
func internalAddr(ip netip.Addr) bool {
	ip = ip.Unmap()
	return ip.IsLoopback() || ip.IsPrivate() || ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast() ||
		ip.IsUnspecified() || ip.IsInterfaceLocalMulticast() || isCGNAT(ip)
}

// loopbackName reports "localhost" and its subdomains.
func loopbackName(host string) bool {
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	return host == "localhost" || strings.HasSuffix(host, ".localhost")
}

// isCGNAT matches 100.64.0.0/10 (shared address space, often internal).
func isCGNAT(ip netip.Addr) bool {
	return netip.MustParsePrefix("100.64.0.0/10").Contains(ip)
}
