package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// selfSigned writes a self-signed certificate for 127.0.0.1 and its key,
// and returns a pool trusting it.
func selfSigned(t *testing.T, certFile, keyFile string) *x509.CertPool {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "stowage"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return pool
}

// tlsClient returns an HTTPS client trusting only pool, its requests
// bounded by timeout.
func tlsClient(pool *x509.CertPool, timeout time.Duration) *http.Client {
	return &http.Client{Timeout: timeout, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
}

// TestServeTLSAndAuth: "serve" with tls and auth in its config serves
// HTTPS, asks registry clients for Basic credentials and leaves the probe
// open.
func TestServeTLSAndAuth(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile, htpasswd := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key"), filepath.Join(dir, "htpasswd")
	pool := selfSigned(t, certFile, keyFile)
	hash, err := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(htpasswd, []byte("user:"+string(hash)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf("storage:\n  root: %s\ntls:\n  cert_file: %s\n  key_file: %s\nauth:\n  htpasswd: %s\n",
		filepath.Join(dir, "cache"), certFile, keyFile, htpasswd)
	addr := freeAddr(t)
	runServe(t, "--config", writeConfig(t, dir, cfg), "--listen", addr, "--log-level", "error")
	ctx := t.Context()
	client := tlsClient(pool, 10*time.Second)
	defer client.CloseIdleConnections()
	get := func(path, user, password string) (*http.Response, error) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+addr+path, nil)
		if user != "" {
			req.SetBasicAuth(user, password)
		}
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		return resp, err
	}
	var resp *http.Response
	for range 200 {
		if resp, err = get("/healthz", "", ""); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("/healthz over TLS without credentials: %v %v", resp, err)
	}
	if resp, err = get("/v2/", "", ""); err != nil || resp.StatusCode != http.StatusUnauthorized || resp.Header.Get("WWW-Authenticate") == "" {
		t.Fatalf("/v2/ without credentials: %v %v; want 401 with WWW-Authenticate", resp, err)
	}
	if resp, err = get("/v2/", "user", "pw"); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("/v2/ with credentials: %v %v; want 200", resp, err)
	}
}
