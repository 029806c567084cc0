package upstream

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/base64"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// fwdProxy is a small forward proxy for tests: CONNECT tunnels and plain
// HTTP forwarding, with its own name table (so names it knows resolve
// nowhere else), an optional Basic Proxy-Authorization check, and a fault
// that cuts plain-HTTP response bodies after N bytes.
type fwdProxy struct {
	srv       *httptest.Server
	hosts     map[string]string // host:port -> real address
	user      string
	pass      string
	cutAfter  atomic.Int64 // > 0: abort plain bodies after this many bytes (once)
	conns     atomic.Int64
	refused   atomic.Int64 // 407 answers sent
	transport *http.Transport
	// block, when set, answers a plain-HTTP request it matches with the
	// proxy's own 403 HTML policy page, as corporate proxies do.
	block   func(*http.Request) bool
	blocked atomic.Int64
	// inspect, when set, makes the proxy TLS-inspecting: it accepts a
	// CONNECT, terminates the TLS itself with this config (its
	// interception certificate), and handles the requests inside like
	// plain ones (block applies), forwarding them over TLS.
	inspect *tls.Config

	mu   sync.Mutex
	seen []string // "METHOD host path" of every proxied request
}

func startFwdProxy(t testing.TB, hosts map[string]string, user, pass string) *fwdProxy {
	t.Helper()
	p := &fwdProxy{hosts: hosts, user: user, pass: pass}
	// The registry's certificate is not checked: the test proxy trusts
	// what it forwards to.
	p.transport = &http.Transport{DialContext: p.dial, DisableKeepAlives: true,
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}} //nolint:gosec // test proxy
	p.srv = httptest.NewUnstartedServer(p)
	p.srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			p.conns.Add(1)
		}
	}
	p.srv.Start()
	t.Cleanup(func() {
		p.srv.CloseClientConnections()
		p.srv.Close()
		p.transport.CloseIdleConnections()
	})
	return p
}

// URL is the proxy URL, with credentials when the proxy demands them.
func (p *fwdProxy) URL() string {
	if p.user == "" {
		return p.srv.URL
	}
	return strings.Replace(p.srv.URL, "http://", "http://"+p.user+":"+p.pass+"@", 1)
}

func (p *fwdProxy) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	real, ok := p.hosts[addr]
	if !ok {
		return nil, &net.DNSError{Err: "unknown to test proxy", Name: addr, IsNotFound: true}
	}
	var d net.Dialer
	return d.DialContext(ctx, network, real)
}

func (p *fwdProxy) requests() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.seen...)
}

func (p *fwdProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if p.user != "" {
		want := "Basic " + base64.StdEncoding.EncodeToString([]byte(p.user+":"+p.pass))
		if r.Header.Get("Proxy-Authorization") != want {
			p.refused.Add(1)
			w.Header().Set("Proxy-Authenticate", `Basic realm="test"`)
			http.Error(w, "proxy auth", http.StatusProxyAuthRequired)
			return
		}
	}
	if r.Method != http.MethodConnect && p.blockPage(w, r) {
		return
	}
	p.mu.Lock()
	p.seen = append(p.seen, r.Method+" "+r.Host+" "+r.URL.Path)
	p.mu.Unlock()
	if r.Method == http.MethodConnect {
		p.tunnel(w, r)
		return
	}
	out := r.Clone(r.Context())
	out.RequestURI = ""
	out.Header.Del("Proxy-Authorization")
	out.Header.Del("Proxy-Connection")
	resp, err := p.transport.RoundTrip(out)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	for k, v := range resp.Header {
		w.Header()[k] = v
	}
	w.WriteHeader(resp.StatusCode)
	if n := p.cutAfter.Swap(0); n > 0 {
		_, _ = io.CopyN(w, resp.Body, n)
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler) // reset mid-body
	}
	_, _ = io.Copy(w, resp.Body)
}

// blockPage answers r with the proxy's 403 policy page when block says so.
func (p *fwdProxy) blockPage(w http.ResponseWriter, r *http.Request) bool {
	if p.block == nil || !p.block(r) {
		return false
	}
	p.blocked.Add(1)
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Via", "1.1 proxy.corp.example")
	w.WriteHeader(http.StatusForbidden)
	_, _ = io.WriteString(w, "<html><body><h1>Access denied by corporate policy</h1></body></html>")
	return true
}

// intercept serves the HTTP requests inside an intercepted TLS tunnel to
// host until the client closes it.
func (p *fwdProxy) intercept(conn net.Conn, host string) {
	defer conn.Close()
	br := bufio.NewReader(conn)
	for {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		req.URL.Scheme, req.URL.Host, req.RequestURI = "https", host, ""
		rec := httptest.NewRecorder()
		if !p.blockPage(rec, req) {
			resp, err := p.transport.RoundTrip(req)
			if err != nil {
				rec.WriteHeader(http.StatusBadGateway)
			} else {
				for k, v := range resp.Header {
					rec.Header()[k] = v
				}
				rec.WriteHeader(resp.StatusCode)
				_, _ = io.Copy(rec, resp.Body)
				resp.Body.Close()
			}
		}
		out := rec.Result()
		out.ContentLength = int64(rec.Body.Len())
		if req.Method == http.MethodHead {
			out.Body = http.NoBody
		}
		if err := out.Write(conn); err != nil {
			return
		}
	}
}

func (p *fwdProxy) tunnel(w http.ResponseWriter, r *http.Request) {
	up, err := p.dial(r.Context(), "tcp", r.Host)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	conn, buf, err := http.NewResponseController(w).Hijack()
	if err != nil {
		up.Close()
		return
	}
	_, _ = conn.Write([]byte("HTTP/1.1 200 Connection established\r\n\r\n"))
	if p.inspect != nil {
		up.Close()
		p.intercept(tls.Server(&bufConn{Conn: conn, r: buf.Reader}, p.inspect), r.Host)
		return
	}
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(up, buf); done <- struct{}{} }()
	go func() { _, _ = io.Copy(conn, up); done <- struct{}{} }()
	<-done
	conn.Close()
	up.Close()
	<-done
}

// bufConn reads what the hijack already buffered before the connection.
type bufConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufConn) Read(b []byte) (int, error) { return c.r.Read(b) }
