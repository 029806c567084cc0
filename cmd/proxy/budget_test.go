package main

import (
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// TestServeWiresTheLinkBudget: serve builds one bandwidth budget for all
// upstreams and shares it through Redis when redis.addr is set.
func TestServeWiresTheLinkBudget(t *testing.T) {
	rc := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379", MaxRetries: -1})
	defer rc.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	if err := rc.Ping(ctx).Err(); err != nil {
		t.Skipf("redis at 127.0.0.1:6379 unreachable: %v", err)
	}
	for _, tc := range []struct{ redis, want string }{
		{"", "stowage_budget_shared 0"},
		{"127.0.0.1:6379", "stowage_budget_shared 1"},
	} {
		dir := t.TempDir()
		cfg := filepath.Join(dir, "config.yaml")
		doc := "storage: {root: " + filepath.Join(dir, "cache") + "}\n" +
			"redis: {addr: \"" + tc.redis + "\"}\n" +
			"link: {bandwidth: 10MB/s, prefetch_share: 30%}\n" +
			"upstreams: {docker.io: {limits: {bandwidth: 4MB/s, connections: 8}}}\n"
		if err := os.WriteFile(cfg, []byte(doc), 0o600); err != nil {
			t.Fatal(err)
		}
		addr := startServe(t, "--config", cfg, "--log-level", "error")
		resp, err := http.Get("http://" + addr + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.Contains(string(body), tc.want) {
			t.Errorf("redis %q: metrics lack %q", tc.redis, tc.want)
		}
	}
}
