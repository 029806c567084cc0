package main

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// writeConfig writes the config text cfg to dir/config.yaml and returns
// its path.
func writeConfig(t *testing.T, dir, cfg string) string {
	t.Helper()
	path := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// runServe runs "serve" with args in this process until stop is called or
// the test ends (a graceful shutdown, as on SIGTERM); it must then return
// no error within 30 s. Calling stop again does nothing.
func runServe(t *testing.T, args ...string) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- run(ctx, append([]string{"serve"}, args...)) }()
	stopped := false
	stop = func() {
		t.Helper()
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("serve: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("serve did not stop")
		}
	}
	t.Cleanup(stop)
	return stop
}

// serveUntilStopped runs "serve" in this process until stop is called
// (a graceful shutdown, as on SIGTERM), and returns its address once
// /healthz answers.
func serveUntilStopped(t *testing.T, args ...string) (addr string, stop func()) {
	t.Helper()
	addr = freeAddr(t)
	stop = runServe(t, append([]string{"--listen", addr}, args...)...)
	waitHealthy(t, addr)
	return addr, stop
}

// startServe runs "serve" with args plus a free --listen address until the
// test ends (then it must stop cleanly), and returns the address once
// /healthz answers.
func startServe(t *testing.T, args ...string) string {
	t.Helper()
	addr, _ := serveUntilStopped(t, args...)
	return addr
}

// TestServeWithDefaults runs "serve" with no config file (only the listen
// address and cache directory moved), checks the API answers, and shuts it
// down gracefully through its context (checked at cleanup).
func TestServeWithDefaults(t *testing.T) {
	root := filepath.Join(t.TempDir(), "cache")
	addr := startServe(t, "--root", root, "--log-level", "error")
	resp, err := http.Get("http://" + addr + "/v2/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Docker-Distribution-API-Version") != "registry/2.0" {
		t.Fatalf("/v2/: %d %v", resp.StatusCode, resp.Header)
	}
	for _, path := range []string{"/healthz", "/metrics"} {
		r, err := http.Get("http://" + addr + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(r.Body)
		r.Body.Close()
		if r.StatusCode != http.StatusOK {
			t.Fatalf("%s: %d", path, r.StatusCode)
		}
		if path == "/metrics" && !strings.Contains(string(body), "stowage_fills_in_flight") {
			t.Fatal("metrics lack stowage_fills_in_flight")
		}
	}
	if _, err := os.Stat(filepath.Join(root, "stowage", "staging")); err != nil {
		t.Fatalf("cache directory not created: %v", err)
	}
}

func TestFlagErrors(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{"serve", "--upstream", "nohost"},
		{"serve", "--upstream", "docker.io=ftp://x"},
		{"serve", "--default-upstream", "unknown.example"},
		{"serve", "--config", "/does/not/exist.yaml"},
		{"serve", "--log-level", "loud"},
	} {
		if err := run(t.Context(), args); err == nil {
			t.Errorf("%v: no error", args)
		}
	}
}
