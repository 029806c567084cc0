package upstream

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/stowage/stowage/config"
)

// newBaseTransport builds the innermost RoundTripper: connection pooling,
// the upstream's forward proxy, TLS and the per-phase timeouts. There is no
// overall timeout: a blob body that keeps moving is never cut (see
// stallReader).
func newBaseTransport(cfg config.Upstream) (*http.Transport, proxyFunc, error) {
	tlsCfg, err := newTLSConfig(cfg.TLS)
	if err != nil {
		return nil, nil, err
	}
	proxy, err := newProxyFunc(cfg.Proxy, cfg.NoProxy)
	if err != nil {
		return nil, nil, err
	}
	dialer := &net.Dialer{Timeout: cfg.Timeouts.Dial, KeepAlive: 30 * time.Second}
	dial := dialer.DialContext
	if !cfg.Internal && directConnections(cfg.Proxy) {
		dial = newDialGuard(dialer, cfg.Endpoints).DialContext
	}
	t := &http.Transport{
		// With a proxy the transport sends the host name to the proxy
		// (CONNECT host:port, or the absolute URL) and never resolves it.
		Proxy:                  proxy,
		OnProxyConnectResponse: connectAnswer,
		DialContext:            dial,
		TLSClientConfig:        tlsCfg,
		TLSHandshakeTimeout:    cfg.Timeouts.TLSHandshake,
		ResponseHeaderTimeout:  cfg.Timeouts.ResponseHeader,
		ExpectContinueTimeout:  time.Second,
		ForceAttemptHTTP2:      true,
		MaxIdleConnsPerHost:    16,
		IdleConnTimeout:        90 * time.Second,
	}
	return t, proxy, nil
}

// newTLSConfig verifies against the system roots plus CAFile and the CAs
// of CertDir; client certificates are optional; InsecureSkipVerify only
// when configured.
func newTLSConfig(c config.TLS) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: c.InsecureSkipVerify} //nolint:gosec // opt-in by config
	addCAs := func(file string, what string) error {
		pem, err := os.ReadFile(file)
		if err != nil {
			return fmt.Errorf("upstream: %s: %w", what, err)
		}
		if tc.RootCAs == nil {
			if tc.RootCAs, err = x509.SystemCertPool(); err != nil || tc.RootCAs == nil {
				tc.RootCAs = x509.NewCertPool()
			}
		}
		if !tc.RootCAs.AppendCertsFromPEM(pem) {
			return fmt.Errorf("upstream: %s %s: no PEM certificate found", what, file)
		}
		return nil
	}
	addClient := func(certFile, keyFile string) error {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			// The key file content never appears in this error.
			return fmt.Errorf("upstream: tls client certificate %s: %w", certFile, err)
		}
		tc.Certificates = append(tc.Certificates, cert)
		return nil
	}
	if c.CAFile != "" {
		if err := addCAs(c.CAFile, "tls.ca_file"); err != nil {
			return nil, err
		}
	}
	if (c.CertFile == "") != (c.KeyFile == "") {
		return nil, errors.New("upstream: tls.cert_file and tls.key_file go together")
	}
	if c.CertFile != "" {
		if err := addClient(c.CertFile, c.KeyFile); err != nil {
			return nil, err
		}
	}
	if c.CertDir != "" {
		entries, err := os.ReadDir(c.CertDir)
		if err != nil {
			return nil, fmt.Errorf("upstream: tls.cert_dir: %w", err)
		}
		// The certs.d layout, as containerd, Docker and containers/image
		// read it; ReadDir sorts, so the order is stable.
		for _, e := range entries {
			name := e.Name()
			full := filepath.Join(c.CertDir, name)
			switch {
			case e.IsDir():
			case strings.HasSuffix(name, ".crt"):
				if err := addCAs(full, "tls.cert_dir"); err != nil {
					return nil, err
				}
			case strings.HasSuffix(name, ".cert"):
				key := strings.TrimSuffix(full, ".cert") + ".key"
				if _, err := os.Stat(key); err != nil {
					return nil, fmt.Errorf("upstream: tls.cert_dir: client certificate %s has no key %s", full, filepath.Base(key))
				}
				if err := addClient(full, key); err != nil {
					return nil, err
				}
			case strings.HasSuffix(name, ".key"):
				if _, err := os.Stat(strings.TrimSuffix(full, ".key") + ".cert"); err != nil {
					return nil, fmt.Errorf("upstream: tls.cert_dir: key %s has no client certificate", full)
				}
			}
		}
	}
	return tc, nil
}

// proxyFunc picks the forward proxy for a request (nil: direct).
type proxyFunc func(*http.Request) (*url.URL, error)

// newProxyFunc implements config.Upstream.Proxy and NoProxy: "direct" is
// none, "" is the standard environment, else the URL (userinfo becomes
// Proxy-Authorization, set by http.Transport for CONNECT and plain HTTP).
func newProxyFunc(proxy string, noProxy []string) (proxyFunc, error) {
	bypass, err := newNoProxy(noProxy)
	if err != nil {
		return nil, err
	}
	var base proxyFunc
	switch proxy {
	case "direct":
		return func(*http.Request) (*url.URL, error) { return nil, nil }, nil
	case "":
		base = http.ProxyFromEnvironment
	default:
		u, err := url.Parse(proxy)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			// Never echo the value: it may hold a password.
			return nil, errors.New("upstream: proxy must be an http:// or https:// URL or \"direct\"")
		}
		base = http.ProxyURL(u)
	}
	return func(r *http.Request) (*url.URL, error) {
		if bypass.match(r.URL.Hostname()) {
			return nil, nil
		}
		return base(r)
	}, nil
}

// noProxy matches hosts against NoProxy entries like Go's NO_PROXY: a host
// matches itself and its subdomains, ".domain" matches the domain and its
// subdomains, "*" matches all, and CIDRs match literal IPs.
type noProxy struct {
	all   bool
	hosts []string
	nets  []*net.IPNet
}

func newNoProxy(entries []string) (noProxy, error) {
	var np noProxy
	for _, e := range entries {
		e = strings.ToLower(strings.TrimSpace(e))
		switch {
		case e == "":
		case e == "*":
			np.all = true
		case strings.Contains(e, "/"):
			_, n, err := net.ParseCIDR(e)
			if err != nil {
				return np, fmt.Errorf("upstream: no_proxy %q: %w", e, err)
			}
			np.nets = append(np.nets, n)
		default:
			if h, _, err := net.SplitHostPort(e); err == nil {
				e = h // ports are ignored: the host decides
			}
			np.hosts = append(np.hosts, strings.Trim(e, "[]"))
		}
	}
	return np, nil
}

func (np noProxy) match(host string) bool {
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	if np.all {
		return true
	}
	if ip := net.ParseIP(host); ip != nil {
		for _, n := range np.nets {
			if n.Contains(ip) {
				return true
			}
		}
	}
	for _, h := range np.hosts {
		if strings.HasPrefix(h, ".") {
			if strings.HasSuffix(host, h) || host == h[1:] {
				return true
			}
		} else if host == h || strings.HasSuffix(host, "."+h) {
			return true
		}
	}
	return false
}

// userAgent sets the User-Agent header on every request.
type userAgent struct {
	inner http.RoundTripper
	ua    string
}

func (u *userAgent) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("User-Agent", u.ua)
	return u.inner.RoundTrip(r)
}
