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

	"github.com/stowage/stowage/config"
)

func TestClusterSecret(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "secret")
	if err := os.WriteFile(file, []byte("file-secret-0123456789\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("STOWAGE_TEST_CLUSTER_SECRET", "env-secret-0123456789")
	t.Setenv("STOWAGE_TEST_SHORT", "short")
	for _, tc := range []struct {
		name string
		c    config.Cluster
		want string // "" an error
	}{
		{"env first", config.Cluster{SecretEnv: "STOWAGE_TEST_CLUSTER_SECRET", SecretFile: file}, "env-secret-0123456789"},
		{"file when the env is unset", config.Cluster{SecretEnv: "STOWAGE_TEST_UNSET", SecretFile: file}, "file-secret-0123456789"},
		{"too short", config.Cluster{SecretEnv: "STOWAGE_TEST_SHORT"}, ""},
		{"missing file", config.Cluster{SecretFile: filepath.Join(dir, "nope")}, ""},
		{"none", config.Cluster{}, ""},
	} {
		got, err := clusterSecret(tc.c)
		if tc.want == "" && err == nil || tc.want != "" && (err != nil || string(got) != tc.want) {
			t.Errorf("%s: %q %v", tc.name, got, err)
		}
	}
}

func TestAdvertiseURL(t *testing.T) {
	t.Setenv("STOWAGE_TEST_POD_IP", "10.1.2.3")
	for _, tc := range []struct {
		c    config.Cluster
		want string // prefix
	}{
		{config.Cluster{Listen: ":5001", Advertise: "http://${STOWAGE_TEST_POD_IP}:5001"}, "http://10.1.2.3:5001"},
		{config.Cluster{Listen: "127.0.0.1:5001"}, "http://127.0.0.1:5001"},
		{config.Cluster{Listen: ":5001"}, "http://"},
	} {
		got, err := advertiseURL(tc.c)
		if err != nil && tc.c.Advertise != "" || err == nil && !strings.HasPrefix(got, tc.want) {
			t.Errorf("%+v: %q %v", tc.c, got, err)
		}
	}
}

// TestServeInternalListener runs "serve" with peer streaming on: the
// internal listener refuses requests without the secret, and the client API
// does not route the internal endpoint.
func TestServeInternalListener(t *testing.T) {
	rc := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379"})
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	err := rc.Ping(ctx).Err()
	cancel()
	rc.Close()
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("redis on 127.0.0.1:6379: %v", err)
		}
		t.Skipf("redis on 127.0.0.1:6379: %v", err)
	}
	internal := freeAddr(t)
	dir := t.TempDir()
	cfgFile := writeConfig(t, dir, "storage:\n  root: "+filepath.Join(dir, "cache")+"\nredis:\n  addr: 127.0.0.1:6379\n"+
		"cluster:\n  listen: "+internal+"\n  secret_env: STOWAGE_TEST_SERVE_SECRET\n")
	t.Setenv("STOWAGE_TEST_SERVE_SECRET", "serve-secret-0123456789")
	addr := startServe(t, "--config", cfgFile, "--log-level", "error")
	const path = "/internal/v1/fills/sha256:0000000000000000000000000000000000000000000000000000000000000000"
	get := func(host, auth string) int {
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://"+host+path, nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	if c := get(internal, ""); c != http.StatusUnauthorized {
		t.Fatalf("internal listener without the secret: %d", c)
	}
	if c := get(internal, "Bearer serve-secret-0123456789"); c != http.StatusNotFound {
		t.Fatalf("internal listener with the secret, no fill: %d", c)
	}
	if c := get(addr, "Bearer serve-secret-0123456789"); c == http.StatusOK || c == http.StatusUnauthorized {
		t.Fatalf("client API answered the internal endpoint: %d", c)
	}
}
