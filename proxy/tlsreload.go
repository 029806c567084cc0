package proxy

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"
)

// CertReloader serves a certificate and key from PEM files and re-reads
// them when their content changes (checked at most every reloadEvery, on
// a handshake), so a certificate rotated by cert-manager is used by new
// connections without a restart. A pair that does not load (a rotation
// half written) keeps the previous certificate, logged.
type CertReloader struct {
	certFile, keyFile string
	log               *slog.Logger
	reloadEvery       time.Duration

	mu      sync.Mutex
	cert    *tls.Certificate
	rawCert []byte
	rawKey  []byte
	checked time.Time
}

const certReloadEvery = 2 * time.Second

// NewCertReloader loads the pair now (an error if it does not load).
func NewCertReloader(certFile, keyFile string, log *slog.Logger) (*CertReloader, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := &CertReloader{certFile: certFile, keyFile: keyFile, log: log, reloadEvery: certReloadEvery}
	if err := c.load(); err != nil {
		return nil, err
	}
	c.checked = time.Now()
	return c, nil
}

// load reads both files and swaps the certificate when they changed.
func (c *CertReloader) load() error {
	rawCert, err := os.ReadFile(c.certFile)
	if err != nil {
		return fmt.Errorf("tls.cert_file: %w", err)
	}
	rawKey, err := os.ReadFile(c.keyFile)
	if err != nil {
		return fmt.Errorf("tls.key_file: %w", err)
	}
	if c.cert != nil && bytes.Equal(rawCert, c.rawCert) && bytes.Equal(rawKey, c.rawKey) {
		return nil
	}
	cert, err := tls.X509KeyPair(rawCert, rawKey)
	if err != nil {
		return fmt.Errorf("tls: %s and %s: %w", c.certFile, c.keyFile, err)
	}
	reloaded := c.cert != nil
	c.cert, c.rawCert, c.rawKey = &cert, rawCert, rawKey
	if reloaded {
		c.log.Info("tls certificate reloaded", "cert_file", c.certFile, "not_after", cert.Leaf.NotAfter)
	}
	return nil
}

// GetCertificate is for tls.Config.GetCertificate.
func (c *CertReloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if now := time.Now(); now.Sub(c.checked) >= c.reloadEvery || now.Before(c.checked) {
		c.checked = now
		if err := c.load(); err != nil {
			c.log.Warn("tls: reloading the certificate failed; keeping the previous one", "err", err)
		}
	}
	return c.cert, nil
}

// TLSConfig returns a server TLS configuration using the reloader (TLS 1.2
// or later; HTTP/2 and HTTP/1.1 offered).
func (c *CertReloader) TLSConfig() *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: c.GetCertificate,
		NextProtos: []string{"h2", "http/1.1"}}
}
