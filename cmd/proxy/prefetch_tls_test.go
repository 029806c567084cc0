package main

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stowage/stowage/proxy/prefetch"
)

// startServeTLS runs "serve" with the config text cfg on a free address
// until the test ends, and returns the address once /healthz answers over
// TLS verified with pool.
func startServeTLS(t *testing.T, cfg string, pool *x509.CertPool) string {
	t.Helper()
	addr := freeAddr(t)
	runServe(t, "--config", writeConfig(t, t.TempDir(), cfg), "--listen", addr)
	client := tlsClient(pool, 5*time.Second)
	defer client.CloseIdleConnections()
	for range 200 {
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, "https://"+addr+"/healthz", nil)
		if resp, err := client.Do(req); err == nil {
			resp.Body.Close()
			return addr
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("serve did not answer /healthz over TLS")
	return ""
}

// TestPrefetchServerCA: "prefetch --server https://..." trusts the
// server's certificate only through the system roots or --server-ca: an
// unknown issuer, an unrelated CA, a file without a certificate and a CA
// for a plain http server all fail before any job; the right CA runs the
// job to the upstream's digest.
func TestPrefetchServerCA(t *testing.T) {
	t.Parallel()
	upstream, dgst := upstreamWith(t)
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	pool := selfSigned(t, certFile, keyFile) // the certificate is its own CA
	otherCA := filepath.Join(dir, "other-ca.crt")
	selfSigned(t, otherCA, filepath.Join(dir, "other.key"))
	notPEM := filepath.Join(dir, "not-pem.crt")
	tokenFile := filepath.Join(dir, "token")
	listFile := filepath.Join(dir, "list.txt")
	for name, data := range map[string]string{notPEM: "not a certificate\n", tokenFile: "tok\n", listFile: "team/app:v1\n"} {
		if err := os.WriteFile(name, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	addr := startServeTLS(t, fmt.Sprintf(`storage:
  root: %q
upstreams:
  docker.io:
    endpoints: [%q]
admin:
  token_file: %q
tls:
  cert_file: %q
  key_file: %q
log:
  level: error
`, filepath.Join(dir, "cache"), upstream, tokenFile, certFile, keyFile), pool)

	prefetchCmd := func(args ...string) (string, error) {
		var out, errOut bytes.Buffer
		cmd := newRootCmd()
		cmd.SetOut(&out)
		cmd.SetErr(&errOut)
		cmd.SetArgs(append([]string{"prefetch", "--token-file", tokenFile, "-f", listFile, "-o", "json"}, args...))
		ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
		defer cancel()
		err := cmd.ExecuteContext(ctx)
		if err != nil {
			t.Logf("prefetch %v: %v\n%s", args, err, errOut.String())
		}
		return out.String(), err
	}
	server := "https://" + addr

	// Without the CA: the certificate's issuer is unknown.
	_, err := prefetchCmd("--server", server)
	var unknown x509.UnknownAuthorityError
	if !errors.As(err, &unknown) {
		t.Errorf("no --server-ca: %v; want an unknown authority error", err)
	}
	// A CA that did not sign the certificate.
	if _, err := prefetchCmd("--server", server, "--server-ca", otherCA); !errors.As(err, &unknown) {
		t.Errorf("--server-ca of another CA: %v; want an unknown authority error", err)
	}
	// Bad input gets an error naming the flag.
	for name, args := range map[string][]string{
		"no PEM":       {"--server", server, "--server-ca", notPEM},
		"missing file": {"--server", server, "--server-ca", filepath.Join(dir, "absent.crt")},
		"plain http":   {"--server", "http://" + addr, "--server-ca", certFile},
		"no --server":  {"--server-ca", certFile},
	} {
		if _, err := prefetchCmd(args...); err == nil || !strings.Contains(err.Error(), "--server-ca") {
			t.Errorf("%s: %v; want an error naming --server-ca", name, err)
		}
	}

	// The right CA: the job runs and reports the upstream's digest.
	out, err := prefetchCmd("--server", server, "--server-ca", certFile)
	if err != nil {
		t.Fatalf("--server-ca of the issuer: %v", err)
	}
	var rep prefetch.Report
	if err := json.Unmarshal([]byte(out), &rep); err != nil || !rep.OK() || len(rep.Images) != 1 || string(rep.Images[0].Digest) != dgst {
		t.Fatalf("report: %v %s; want %s", err, out, dgst)
	}
}
