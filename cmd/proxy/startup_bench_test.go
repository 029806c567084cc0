package main

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// BenchmarkStartup100k starts "serve" on a cache of 100,000 blobs and
// reports the time from start to the first /healthz answer (start-ready-s,
// the figure that must stay under 1 s) and to the usage index being built
// in the background (index-ready-s). Run:
//
//	go test -run '^$' -bench Startup100k -benchtime 3x ./cmd/proxy/
func BenchmarkStartup100k(b *testing.B) {
	root := b.TempDir()
	start := time.Now()
	writeBlobTree(b, root, 100_000)
	b.Logf("wrote 100,000 blobs in %s", time.Since(start).Round(time.Millisecond))
	var ready, indexed time.Duration
	n := 0
	for b.Loop() {
		r, i := startOnce(b, root)
		ready += r
		indexed += i
		n++
	}
	b.ReportMetric(ready.Seconds()/float64(n), "start-ready-s")
	b.ReportMetric(indexed.Seconds()/float64(n), "index-ready-s")
}

// writeBlobTree lays out n small blobs (and a _layers link for every
// hundredth) in the registry layout under root.
func writeBlobTree(b *testing.B, root string, n int) {
	b.Helper()
	blobs := filepath.Join(root, "docker/registry/v2/blobs/sha256")
	for i := range n {
		var seed [8]byte
		binary.BigEndian.PutUint64(seed[:], uint64(i))
		sum := sha256.Sum256(seed[:])
		h := hex.EncodeToString(sum[:])
		dir := filepath.Join(blobs, h[:2], h)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			b.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "data"), seed[:], 0o644); err != nil {
			b.Fatal(err)
		}
		if i%100 == 0 {
			link := filepath.Join(root, "docker/registry/v2/repositories/docker.io/library/app/_layers/sha256", h)
			if err := os.MkdirAll(link, 0o755); err != nil {
				b.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(link, "link"), []byte("sha256:"+h), 0o644); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// startOnce runs serve on root until /healthz answers and the index is
// ready, then stops it.
func startOnce(b *testing.B, root string) (ready, indexed time.Duration) {
	b.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	ctx, cancel := context.WithCancel(b.Context())
	done := make(chan error, 1)
	start := time.Now()
	go func() {
		done <- run(ctx, []string{"serve", "--listen", addr, "--root", root, "--log-level", "error"})
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			b.Errorf("serve: %v", err)
		}
	}()
	for range 10_000 {
		resp, err := http.Get("http://" + addr + "/healthz")
		if err == nil {
			resp.Body.Close()
			ready = time.Since(start)
			break
		}
		time.Sleep(time.Millisecond)
	}
	if ready == 0 {
		b.Fatal("serve did not answer /healthz")
	}
	for range 12_000 {
		resp, err := http.Get("http://" + addr + "/metrics")
		if err != nil {
			b.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if strings.Contains(string(body), "\nstowage_cache_index_ready 1\n") {
			indexed = time.Since(start)
			if !strings.Contains(string(body), "\nstowage_cache_objects 100000\n") {
				for _, l := range strings.Split(string(body), "\n") {
					if strings.HasPrefix(l, "stowage_cache_") {
						b.Log(l)
					}
				}
				b.Fatal("the index does not hold the 100,000 blobs")
			}
			return ready, indexed
		}
		time.Sleep(10 * time.Millisecond)
	}
	b.Fatal("the usage index was not ready within 2 minutes")
	return 0, 0
}
