package proxy_test

import (
	"net/http"
	"os"
	"testing"
	"time"
)

// TestReadyz: 200 ok when the storage takes a probe write; 503 while
// draining (SetDraining) and when the storage cannot be written; the probe
// result is reused for a few seconds, so probes under load cost no I/O.
func TestReadyz(t *testing.T) {
	e := newEnv(t, envOptions{})
	if code, status, reasons := e.readyz(t); code != http.StatusOK || status != "ok" {
		t.Fatalf("fresh proxy: %d %s %v", code, status, reasons)
	}
	e.proxy.SetDraining(true)
	if code, status, _ := e.readyz(t); code != http.StatusServiceUnavailable || status != "draining" {
		t.Fatalf("draining: %d %s, want 503 draining", code, status)
	}
	e.proxy.SetDraining(false)

	// The cache root goes away: the next probe fails.
	moved := e.root + ".moved"
	if err := os.Rename(e.root, moved); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.Rename(moved, e.root) })
	if code, _, _ := e.readyz(t); code != http.StatusOK {
		t.Fatalf("within the probe interval: %d, want the cached 200", code)
	}
	e.clock.Advance(10 * time.Second)
	if code, status, reasons := e.readyz(t); code != http.StatusServiceUnavailable || status != "unready" || len(reasons) != 1 {
		t.Fatalf("unwritable storage: %d %s %v, want 503 unready", code, status, reasons)
	}
	if err := os.Rename(moved, e.root); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(10 * time.Second)
	if code, status, _ := e.readyz(t); code != http.StatusOK || status != "ok" {
		t.Fatalf("storage back: %d %s", code, status)
	}
}
