package upstream

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/stowage/stowage/upstream/internal/testregistry"
)

// TestThroughForwardProxy addresses the registry as registry.test, a name
// only the test proxy resolves: every registry and token request must
// cross the proxy. The proxy demands Basic Proxy-Authorization, and cuts a
// blob body once, which the caller resumes with a Range request.
func TestThroughForwardProxy(t *testing.T) {
	t.Parallel()
	var direct atomic.Int64
	reg := testregistry.Start(t,
		testregistry.WithTokenAuth(testregistry.TokenAuth{Username: "bob", Password: "reg-pw-123"}),
		testregistry.WithHandler(func(h http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.Host != "registry.test" {
					direct.Add(1)
				}
				h.ServeHTTP(w, r)
			})
		}))
	img := reg.SeedImage(t, "team/app", "v1", 1, 64<<10)
	px := startFwdProxy(t, map[string]string{"registry.test:80": reg.Addr}, "pxuser", "px-pw-456")

	cfg := testConfig("http://registry.test")
	cfg.Proxy = px.URL()
	cfg.Auth.Username, cfg.Auth.Password = "bob", "reg-pw-123"
	c := newClient(t, cfg)
	ctx := t.Context()

	want, _ := img.Digest()
	m, err := c.GetManifest(ctx, "team/app", "v1", nil)
	if err != nil || m.Digest.String() != want.String() {
		t.Fatalf("GetManifest via proxy: %v", err)
	}
	layers, _ := img.Layers()
	ld, _ := layers[0].Digest()
	rc, _ := layers[0].Compressed()
	wantBlob, _ := io.ReadAll(rc)

	px.cutAfter.Store(1000)
	b, err := c.GetBlob(ctx, "team/app", digest.Digest(ld.String()), 0)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(b.Body)
	b.Body.Close()
	if err == nil || !Temporary(err) {
		t.Fatalf("cut body: err = %v, want a temporary error", err)
	}
	if len(got) == 0 || len(got) >= len(wantBlob) {
		t.Fatalf("cut body delivered %d of %d bytes", len(got), len(wantBlob))
	}
	b, err = c.GetBlob(ctx, "team/app", digest.Digest(ld.String()), int64(len(got)))
	if err != nil || b.Offset != int64(len(got)) {
		t.Fatalf("resume: %+v, %v", b, err)
	}
	rest, err := io.ReadAll(b.Body)
	b.Body.Close()
	if err != nil || !bytes.Equal(append(got, rest...), wantBlob) {
		t.Fatalf("resumed blob differs (%v)", err)
	}

	if direct.Load() != 0 {
		t.Fatalf("%d requests reached the registry without the proxy name", direct.Load())
	}
	seen := px.requests()
	var sawToken, sawManifest bool
	for _, s := range seen {
		if strings.HasPrefix(s, http.MethodConnect) {
			t.Errorf("a plain-HTTP upstream was probed over TLS: %q", s)
		}
		sawToken = sawToken || strings.HasSuffix(s, "registry.test /token")
		sawManifest = sawManifest || strings.Contains(s, "registry.test /v2/team/app/manifests/v1")
	}
	if !sawToken || !sawManifest {
		t.Fatalf("proxy saw %q; want token and manifest requests", seen)
	}
	if px.conns.Load() == 0 {
		t.Fatal("no connection to the proxy")
	}
}

func TestSecretsNeverLogged(t *testing.T) {
	t.Parallel()
	reg := testregistry.Start(t, testregistry.WithTokenAuth(testregistry.TokenAuth{Username: "bob", Password: "right-pw"}))
	reg.SeedImage(t, "team/app", "v1", 1, 512)
	px := startFwdProxy(t, map[string]string{"registry.test:80": reg.Addr}, "pxuser", "px-secret-789")
	const regSecret = "wrong-registry-secret-1"

	for _, tc := range []struct {
		name    string
		proxy   string
		wantErr error
	}{
		{"wrong registry password", px.URL(), ErrUnauthorized},
		{"wrong proxy password", strings.Replace(px.URL(), "px-secret-789", "px-wrong-secret-000", 1), ErrProxy},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var logs bytes.Buffer
			log := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
			cfg := testConfig("http://registry.test")
			cfg.Proxy = tc.proxy
			cfg.Auth.Username, cfg.Auth.Password = "bob", regSecret
			c := newClient(t, cfg, WithLogger(log))
			_, err := c.GetManifest(t.Context(), "team/app", "v1", nil)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			for _, secret := range []string{regSecret, "px-secret-789", "px-wrong-secret-000", "d3JvbmctcmVnaXN0cnktc2VjcmV0LTE"} {
				if strings.Contains(err.Error(), secret) {
					t.Errorf("error leaks %q: %v", secret, err)
				}
				if strings.Contains(logs.String(), secret) {
					t.Errorf("logs leak %q: %s", secret, logs.String())
				}
			}
			if logs.Len() == 0 {
				t.Error("expected some debug logs")
			}
		})
	}
}

func TestTLSUpstreamWithOwnCA(t *testing.T) {
	t.Parallel()
	reg := testregistry.Start(t, testregistry.WithTLS())
	reg.SeedImage(t, "library/busybox", "1", 1, 256)

	cfg := testConfig(reg.URL)
	c := newClient(t, cfg)
	// Unknown CA: unavailable (a cached copy may be served stale), marked
	// as a certificate problem, and not retried.
	if _, err := c.GetManifest(t.Context(), "library/busybox", "1", nil); !errors.Is(err, ErrCertificate) || !Temporary(err) {
		t.Fatalf("TLS without the CA: %v, want ErrCertificate and Temporary", err)
	}
	cfg.TLS.CAFile = reg.CAFile(t)
	c = newClient(t, cfg)
	if _, err := c.GetManifest(t.Context(), "library/busybox", "1", nil); err != nil {
		t.Fatalf("TLS with CAFile: %v", err)
	}
}

func TestTokenRenewal(t *testing.T) {
	t.Parallel()
	reg := testregistry.Start(t, testregistry.WithTokenAuth(testregistry.TokenAuth{Expiry: 3 * time.Second}))
	reg.SeedImage(t, "team/app", "v1", 1, 256)
	c := newClient(t, testConfig(reg.URL))
	// A frozen client clock: the client never expires the token itself,
	// so renewal must come from the registry's 401.
	frozen := time.Now()
	c.auth.now = func() time.Time { return frozen }
	get := func() {
		t.Helper()
		if _, err := c.HeadManifest(t.Context(), "team/app", "v1", nil); err != nil {
			t.Fatal(err)
		}
	}
	get()
	get()
	if n := reg.TokenRequests("repository:team/app:pull"); n != 1 {
		t.Fatalf("tokens = %d, want 1 (reused)", n)
	}
	time.Sleep(3100 * time.Millisecond) // the server-side expiry (3 s: two requests never straddle it, even on a loaded machine)
	get()
	if n := reg.TokenRequests("repository:team/app:pull"); n != 2 {
		t.Fatalf("tokens = %d after server-side expiry (401), want 2", n)
	}
	// Proactive renewal on the client's clock, before the server rejects.
	c.auth.now = func() time.Time { return time.Now().Add(time.Hour) }
	get()
	if n := reg.TokenRequests("repository:team/app:pull"); n != 3 {
		t.Fatalf("tokens = %d after client-side expiry, want 3", n)
	}
}

// clientCA makes a client CA and a client certificate it signed, as PEM.
func clientCA(t *testing.T) (pool *x509.CertPool, certPEM, keyPEM []byte) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "client CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	pool = x509.NewCertPool()
	pool.AddCert(caCert)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leaf := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "stowage"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, KeyUsage: x509.KeyUsageDigitalSignature,
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leaf, caCert, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalECPrivateKey(key)
	return pool, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leafDER}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
}

func writeFiles(t *testing.T, dir string, files map[string][]byte) {
	t.Helper()
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// TestMutualTLS: an upstream that requires a client certificate refuses a
// client without one and serves one with cert_file/key_file.
func TestMutualTLS(t *testing.T) {
	t.Parallel()
	pool, certPEM, keyPEM := clientCA(t)
	dir := t.TempDir()
	writeFiles(t, dir, map[string][]byte{"client.pem": certPEM, "client-key.pem": keyPEM})
	certFile, keyFile := filepath.Join(dir, "client.pem"), filepath.Join(dir, "client-key.pem")

	reg := testregistry.Start(t, testregistry.WithClientAuth(pool))
	reg.SeedImage(t, "library/busybox", "1", 1, 256)
	cfg := testConfig(reg.URL)
	cfg.TLS.CAFile = reg.CAFile(t)
	if _, err := newClient(t, cfg).GetManifest(t.Context(), "library/busybox", "1", nil); err == nil {
		t.Fatal("mutual TLS without a client certificate succeeded")
	}
	cfg.TLS.CertFile, cfg.TLS.KeyFile = certFile, keyFile
	if _, err := newClient(t, cfg).GetManifest(t.Context(), "library/busybox", "1", nil); err != nil {
		t.Fatalf("mutual TLS with a client certificate: %v", err)
	}
}

// TestCertDir: a certs.d directory (ca.crt, client.cert, client.key), as
// Docker, containerd and skopeo's cert-dir use, gives both the upstream's CA
// and the client certificate; a certificate without its key is refused.
func TestCertDir(t *testing.T) {
	t.Parallel()
	pool, certPEM, keyPEM := clientCA(t)
	reg := testregistry.Start(t, testregistry.WithClientAuth(pool))
	img := reg.SeedImage(t, "library/busybox", "1", 1, 256)
	want, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	caPEM, err := os.ReadFile(reg.CAFile(t))
	if err != nil {
		t.Fatal(err)
	}

	caOnly := t.TempDir()
	writeFiles(t, caOnly, map[string][]byte{"ca.crt": caPEM})
	cfg := testConfig(reg.URL)
	cfg.TLS.CertDir = caOnly
	_, err = newClient(t, cfg).GetManifest(t.Context(), "library/busybox", "1", nil)
	if err == nil || strings.Contains(err.Error(), "certificate signed by unknown authority") {
		t.Fatalf("CA from cert_dir, no client certificate: %v (want a refused handshake, not an unknown CA)", err)
	}

	full := t.TempDir()
	writeFiles(t, full, map[string][]byte{"ca.crt": caPEM, "client.cert": certPEM, "client.key": keyPEM, "README": []byte("ignored")})
	cfg.TLS.CertDir = full
	m, err := newClient(t, cfg).GetManifest(t.Context(), "library/busybox", "1", nil)
	if err != nil {
		t.Fatalf("cert_dir with CA and client certificate: %v", err)
	}
	if m.Digest.String() != want.String() {
		t.Fatalf("digest %s, want %s", m.Digest, want)
	}

	noKey := t.TempDir()
	writeFiles(t, noKey, map[string][]byte{"ca.crt": caPEM, "client.cert": certPEM})
	cfg.TLS.CertDir = noKey
	if _, err := New("docker.io", cfg); err == nil || !strings.Contains(err.Error(), "has no key") {
		t.Fatalf("certificate without key: %v", err)
	}
}
