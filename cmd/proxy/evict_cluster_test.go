package main

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/registry"

	"github.com/stowage/stowage/proxy/cluster"
)

// needRealRedis skips (fails under CI=true) without the real Redis on
// 127.0.0.1:6379.
func needRealRedis(t *testing.T) {
	t.Helper()
	c := cluster.NewRedisClient("127.0.0.1:6379", "", 0, 2*time.Second)
	defer c.Close()
	if err := c.Ping(t.Context()).Err(); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("redis: %v", err)
		}
		t.Skipf("redis: %v", err)
	}
}

// randomNamespace returns prefix followed by 12 random hex digits: a
// redis.namespace of the test's own.
func randomNamespace(prefix string) string {
	var ns [6]byte
	_, _ = rand.Read(ns[:])
	return prefix + hex.EncodeToString(ns[:])
}

// metricValue returns the value of an unlabelled metric on /metrics.
func metricValue(t *testing.T, addr, metric string) (string, bool) {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, metric+" "); ok {
			return v, true
		}
	}
	return "", false
}

// TestServeSharesEviction: two "serve" on one cache directory with the
// real Redis share the eviction bookkeeping: exactly one holds the
// eviction lease, and both report the cluster's usage, which counts
// what each of them cached.
func TestServeSharesEviction(t *testing.T) {
	needRealRedis(t)
	upSrv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(upSrv.Close)
	first := pushRandom(t, upSrv, 64<<10, 2)
	dir := t.TempDir()
	cfgFile := writeConfig(t, dir, fmt.Sprintf(`upstreams:
  docker.io:
    endpoints: [%q]
cache:
  max_size: 100MiB
redis:
  addr: 127.0.0.1:6379
  namespace: %s
log:
  level: error
`, upSrv.URL, randomNamespace("evictshare-")))
	root := filepath.Join(dir, "cache")
	a := startServe(t, "--config", cfgFile, "--root", root)
	b := startServe(t, "--config", cfgFile, "--root", root)

	pullImage(t, a+"/team/app:v1", first)
	pullImage(t, b+"/team/app:v1", first) // hits on b of what a cached

	deadline := time.Now().Add(30 * time.Second)
	for {
		ra, _ := metricValue(t, a, "stowage_eviction_role")
		rb, _ := metricValue(t, b, "stowage_eviction_role")
		ba, _ := metricValue(t, a, "stowage_cache_bytes")
		bb, _ := metricValue(t, b, "stowage_cache_bytes")
		oneLeader := (ra == "1" && rb == "0") || (ra == "0" && rb == "1")
		// Two layers of 64 KiB, a config and a manifest: more than 128 KiB.
		n, _ := strconv.ParseFloat(ba, 64)
		if oneLeader && ba == bb && n > 128<<10 {
			t.Logf("roles %s/%s, cache bytes %s on both", ra, rb, ba)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("roles %q/%q, cache bytes %q/%q: want one leader and the same usage on both", ra, rb, ba, bb)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
