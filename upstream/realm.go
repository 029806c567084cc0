package upstream

import (
	"encoding/hex"
	"fmt"
	"maps"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"

	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// Token realms on internal addresses.
//
// A Bearer challenge names the token server (the realm). A realm on a
// loopback, private, link-local or CGNAT address other than the endpoint's
// own host is what a hostile registry would send to reach internal
// services, so it is refused, with ErrForbiddenAddress (a configuration
// error, not retried), unless the upstream is configured internal: true:
// an upstream on the internal network may well have its token service on
// another internal host.
//
// go-containerregistry refuses every realm that is a private IP literal
// other than the registry's host:port, with no option. For an allowed
// realm on such an address, the challenge handed to it names an alias
// host under aliasSuffix instead, which realmAliases maps back to the real
// address right below it, before the request is sent.

// aliasSuffix marks the alias of an internal realm host; .invalid never
// resolves, so an alias that escaped would fail, not reach anything.
const aliasSuffix = ".realm.stowage.invalid"

// realmChallenge checks ch's realm against the upstream's settings and
// returns the challenge to give go-containerregistry (ch itself, or a copy
// naming the alias).
func (a *authTransport) realmChallenge(ep *endpoint, ch *transport.Challenge) (*transport.Challenge, error) {
	realm, ok := ch.Parameters["realm"]
	if !ok {
		return ch, nil // go-containerregistry reports the missing realm
	}
	u, err := url.Parse(realm)
	if err != nil || u.Host == "" || strings.EqualFold(u.Host, ep.reg.RegistryStr()) {
		return ch, nil
	}
	host := u.Hostname()
	ip, isIP := parseIPLiteral(host)
	if (!isIP || !internalAddr(ip)) && !loopbackName(host) {
		return ch, nil // a public address or a name (the dial guard checks names)
	}
	if !a.internal && !strings.EqualFold(host, ep.base.Hostname()) {
		return nil, fmt.Errorf("%w: the token realm %s of endpoint %s is an internal address; allowed only with internal: true on this upstream",
			ErrForbiddenAddress, u.Host, ep.base.Host)
	}
	if !isIP {
		return ch, nil
	}
	alias, err := aliasHost(u.Host)
	if err != nil {
		return nil, err
	}
	u.Host = alias
	out := *ch
	out.Parameters = maps.Clone(ch.Parameters)
	out.Parameters["realm"] = u.String()
	return &out, nil
}

// aliasHost encodes host[:port] as a DNS name under aliasSuffix.
func aliasHost(hostport string) (string, error) {
	enc := hex.EncodeToString([]byte(hostport))
	var labels []string
	for len(enc) > 60 {
		labels, enc = append(labels, enc[:60]), enc[60:]
	}
	name := strings.Join(append(labels, enc), ".") + aliasSuffix
	if len(name) > 253 {
		return "", fmt.Errorf("%w: token realm host %q is too long", ErrInvalid, hostport)
	}
	return name, nil
}

// realmAliases sends a request for an alias host to the address it
// stands for.
type realmAliases struct {
	inner http.RoundTripper
}

func (r *realmAliases) RoundTrip(req *http.Request) (*http.Response, error) {
	name := strings.ToLower(req.URL.Hostname())
	enc, ok := strings.CutSuffix(name, aliasSuffix)
	if !ok {
		return r.inner.RoundTrip(req)
	}
	b, err := hex.DecodeString(strings.ReplaceAll(enc, ".", ""))
	if err != nil {
		return nil, fmt.Errorf("%w: bad realm alias %q", ErrInvalid, name)
	}
	out := req.Clone(req.Context())
	out.URL.Host, out.Host = string(b), ""
	return r.inner.RoundTrip(out)
}

// parseIPLiteral parses an IP literal in every form a dialer may accept:
// IPv4 and IPv6 (zones dropped, IPv4-mapped unmapped) and the legacy IPv4
// forms of inet_aton ("127.1", "2130706433", "0x7f.1", "0177.0.0.1"), so
// an internal address cannot pass for a name by being spelt oddly.
func parseIPLiteral(host string) (netip.Addr, bool) {
	host, _, _ = strings.Cut(strings.Trim(host, "[]"), "%")
	if ip, err := netip.ParseAddr(host); err == nil {
		return ip.Unmap(), true
	}
	parts := strings.Split(host, ".")
	if len(parts) > 4 {
		return netip.Addr{}, false
	}
	var v uint64
	for i, p := range parts {
		n, ok := parseIPv4Part(p)
		if !ok {
			return netip.Addr{}, false
		}
		bits := uint(8)
		if i == len(parts)-1 {
			bits = 8 * uint(4-i) // the last part fills the rest
		}
		if n >= 1<<bits {
			return netip.Addr{}, false
		}
		v = v<<bits | n
	}
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}), true
}

// parseIPv4Part reads one inet_aton part: decimal, 0x hex or 0 octal.
func parseIPv4Part(p string) (uint64, bool) {
	base := 10
	switch {
	case len(p) > 2 && (p[:2] == "0x" || p[:2] == "0X"):
		p, base = p[2:], 16
	case len(p) > 1 && p[0] == '0':
		p, base = p[1:], 8
	}
	n, err := strconv.ParseUint(p, base, 32)
	return n, err == nil
}
