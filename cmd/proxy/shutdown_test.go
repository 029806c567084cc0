package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/registry"
)

// heldUpstream is an in-process registry whose blob GETs wait for release
// (or their request's end); arrived gets a value for each one that waits.
func heldUpstream(t *testing.T) (url, layer string, release chan struct{}, arrived chan struct{}) {
	t.Helper()
	release, arrived = make(chan struct{}), make(chan struct{}, 16)
	reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/sha256:") && r.Header.Get("X-Seed") == "" {
			arrived <- struct{}{}
			select {
			case <-release:
			case <-r.Context().Done():
				return
			}
		}
		reg.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	img := pushImage(t, srv.URL, "team/app:v1", 1<<20, 1)
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	d, err := layers[0].Digest()
	if err != nil {
		t.Fatal(err)
	}
	return srv.URL, d.String(), release, arrived
}

// serveWithConfig runs "serve" on cfg (YAML) until the returned cancel;
// done yields run's error.
func serveWithConfig(t *testing.T, cfg string) (addr string, cancel context.CancelFunc, done chan error) {
	t.Helper()
	addr = freeAddr(t)
	path := writeConfig(t, t.TempDir(), cfg)
	ctx, cancel := context.WithCancel(t.Context())
	done = make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"serve", "--config", path, "--listen", addr, "--log-level", "error"})
	}()
	for range 200 {
		if resp, err := http.Get("http://" + addr + "/healthz"); err == nil {
			resp.Body.Close()
			return addr, cancel, done
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	t.Fatal("serve did not answer /healthz")
	return "", nil, nil
}

func shutdownConfig(t *testing.T, upstream string, timeout time.Duration) string {
	return fmt.Sprintf("storage:\n  root: %s\nupstreams:\n  docker.io:\n    endpoints: [%q]\n    internal: true\nserver:\n  shutdown_timeout: %s\n",
		filepath.Join(t.TempDir(), "cache"), upstream, timeout)
}

// TestServeShutdownFinishesResponses: on SIGTERM (the context's end) the
// server stops accepting connections, but a response whose blob is still
// being filled from the upstream completes with the whole blob, and serve
// then returns cleanly.
func TestServeShutdownFinishesResponses(t *testing.T) {
	up, layer, release, arrived := heldUpstream(t)
	addr, cancel, done := serveWithConfig(t, shutdownConfig(t, up, 30*time.Second))
	defer cancel()
	type result struct {
		sum string
		n   int64
		err error
	}
	got := make(chan result, 1)
	go func() {
		resp, err := http.Get("http://" + addr + "/v2/team/app/blobs/" + layer)
		if err != nil {
			got <- result{err: err}
			return
		}
		defer resp.Body.Close()
		h := sha256.New()
		n, err := io.Copy(h, resp.Body)
		if err == nil && resp.StatusCode != http.StatusOK {
			err = fmt.Errorf("status %d", resp.StatusCode)
		}
		got <- result{"sha256:" + hex.EncodeToString(h.Sum(nil)), n, err}
	}()
	<-arrived
	cancel() // SIGTERM
	refused := false
	for range 500 {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			refused = true
			break
		}
		c.Close()
		time.Sleep(10 * time.Millisecond)
	}
	if !refused {
		t.Fatal("the server still accepts connections after SIGTERM")
	}
	close(release)
	r := <-got
	if r.err != nil || r.sum != layer {
		t.Fatalf("response in flight at SIGTERM: %d bytes, digest %s, err %v; want the whole blob %s", r.n, r.sum, r.err, layer)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("serve: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not return")
	}
}

// TestServeShutdownDeadline: a response that cannot finish (its upstream
// hangs) is cut at server.shutdown_timeout, and serve returns instead of
// waiting for it.
func TestServeShutdownDeadline(t *testing.T) {
	up, layer, release, arrived := heldUpstream(t)
	defer close(release)
	addr, cancel, done := serveWithConfig(t, shutdownConfig(t, up, time.Second))
	defer cancel()
	got := make(chan error, 1)
	go func() {
		resp, err := http.Get("http://" + addr + "/v2/team/app/blobs/" + layer)
		if err == nil {
			_, err = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		got <- err
	}()
	<-arrived
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("serve: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("serve did not return within 20s with shutdown_timeout 1s")
	}
	if err := <-got; err == nil {
		t.Fatal("the hung response completed; want it cut")
	}
}
