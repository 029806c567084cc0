package testregistry

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/distribution/distribution/v3/configuration"
	"github.com/distribution/distribution/v3/registry/handlers"
	// The inmemory driver registers itself; the registry finds it by name.
	_ "github.com/distribution/distribution/v3/registry/storage/driver/inmemory"
)

// Registry is a running in-process registry.
type Registry struct {
	// URL is the base URL clients use ("http://127.0.0.1:port" or https).
	URL string
	// Addr is the listener's host:port.
	Addr string
	// Server is the public listener (behind the token layer, if any).
	Server *httptest.Server

	app    *handlers.App
	seed   *httptest.Server
	tokens *tokenServer
}

// Option configures Start.
type Option func(*settings)

type settings struct {
	tls       bool
	clientCAs *x509.CertPool
	token     *TokenAuth
	wrap      func(http.Handler) http.Handler
	cfgHook   func(*configuration.Configuration)
}

// WithTLS serves the public listener over HTTPS with httptest's own CA
// (see CAFile and Server.Certificate).
func WithTLS() Option { return func(s *settings) { s.tls = true } }

// WithClientAuth serves HTTPS that requires a client certificate signed by
// one of pool's CAs (mutual TLS).
func WithClientAuth(pool *x509.CertPool) Option {
	return func(s *settings) { s.tls, s.clientCAs = true, pool }
}

// WithTokenAuth puts a bearer-token layer in front of the registry.
func WithTokenAuth(a TokenAuth) Option { return func(s *settings) { s.token = &a } }

// WithHandler wraps the public handler (outermost), e.g. to count requests
// or inject faults.
func WithHandler(wrap func(http.Handler) http.Handler) Option {
	return func(s *settings) { s.wrap = wrap }
}

// WithConfig lets a test adjust the distribution configuration.
func WithConfig(fn func(*configuration.Configuration)) Option {
	return func(s *settings) { s.cfgHook = fn }
}

// Start runs a registry until the test ends.
func Start(t testing.TB, opts ...Option) *Registry {
	t.Helper()
	var s settings
	for _, o := range opts {
		o(&s)
	}
	cfg := &configuration.Configuration{
		Storage: configuration.Storage{
			"inmemory": configuration.Parameters{},
			"delete":   configuration.Parameters{"enabled": true},
			"maintenance": configuration.Parameters{"uploadpurging": map[any]any{
				"enabled": false,
			}},
		},
	}
	cfg.HTTP.Secret = "testregistry-not-a-secret"
	cfg.Log.AccessLog.Disabled = true
	if s.cfgHook != nil {
		s.cfgHook(cfg)
	}
	ctx, cancel := context.WithCancel(context.Background())
	app := handlers.NewApp(ctx, cfg)
	r := &Registry{app: app}

	var h http.Handler = app
	if s.token != nil {
		r.tokens = newTokenServer(*s.token, app)
		h = r.tokens
	}
	if s.wrap != nil {
		h = s.wrap(h)
	}
	if s.tls {
		r.Server = httptest.NewUnstartedServer(h)
		if s.clientCAs != nil {
			r.Server.TLS = &tls.Config{ClientCAs: s.clientCAs, ClientAuth: tls.RequireAndVerifyClientCert}
		}
		r.Server.StartTLS()
	} else {
		r.Server = httptest.NewServer(h)
	}
	r.URL = r.Server.URL
	r.Addr = strings.TrimPrefix(strings.TrimPrefix(r.URL, "http://"), "https://")
	r.seed = httptest.NewServer(app)
	t.Cleanup(func() {
		r.Server.CloseClientConnections()
		r.Server.Close()
		r.seed.CloseClientConnections()
		r.seed.Close()
		_ = app.Shutdown()
		cancel()
	})
	return r
}

// TokenRequests is how many tokens were issued for scope (e.g.
// "repository:library/alpine:pull"); 0 without token auth.
func (r *Registry) TokenRequests(scope string) int {
	if r.tokens == nil {
		return 0
	}
	return r.tokens.count(scope)
}

// CAFile writes the TLS listener's CA certificate as PEM into a temporary
// file and returns its path (for config.TLS.CAFile).
func (r *Registry) CAFile(t testing.TB) string {
	t.Helper()
	cert := r.Server.Certificate()
	if cert == nil {
		t.Fatal("testregistry: CAFile needs WithTLS")
	}
	return writeCA(t, cert)
}

func writeCA(t testing.TB, cert *x509.Certificate) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "ca.pem")
	b := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
