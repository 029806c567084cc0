package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestServeDashboard: "serve" mounts the dashboard beside the admin API:
// with a token it needs the token; ui.public_read_only opens the reads;
// without either /ui/ says how to turn it on (503); with ui.disabled there
// is no dashboard at all.
func TestServeDashboard(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte("tok\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, config string
		want         map[string]int // "METHOD path token" -> status
	}{
		{"token", fmt.Sprintf("admin:\n  token_file: %q\n", tokenFile), map[string]int{
			"GET /ui/ ": 200, "GET /api/v1/overview ": 401, "GET /api/v1/overview tok": 200,
			"GET /api/v1/prefetch tok": 200, "GET /api/v1/fills tok": 200, "POST /api/v1/prefetch ": 401, "GET /v2/ ": 200,
		}},
		{"public", "ui:\n  public_read_only: true\n", map[string]int{
			"GET /ui/ ": 200, "GET /api/v1/overview ": 200, "GET /api/v1/overview tok": 401,
			"POST /api/v1/prefetch ": 404, "GET /v2/ ": 200,
		}},
		{"disabled", fmt.Sprintf("admin:\n  token_file: %q\nui:\n  disabled: true\n", tokenFile), map[string]int{
			"GET /ui/ ": 404, "GET /api/v1/overview tok": 404, "GET /api/v1/prefetch tok": 200,
		}},
		{"none", "", map[string]int{"GET /ui/ ": 503, "GET /api/v1/overview ": 404}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			cfgFile := writeConfig(t, t.TempDir(), c.config+"log:\n  level: error\n")
			addr := startServe(t, "--config", cfgFile, "--root", t.TempDir())
			for k, want := range c.want {
				f := strings.SplitN(k, " ", 3)
				req, _ := http.NewRequestWithContext(t.Context(), f[0], "http://"+addr+f[1], strings.NewReader("team/app:v1\n"))
				if f[2] != "" {
					req.Header.Set("Authorization", "Bearer "+f[2])
				}
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != want {
					t.Errorf("%s: %d, want %d", k, resp.StatusCode, want)
				}
			}
		})
	}
}

// TestServeDashboardUsage: serve plugs the eviction engine's usage index
// into the dashboard: once the index is built the overview shows the cap.
func TestServeDashboardUsage(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cfgFile := writeConfig(t, dir, "ui:\n  public_read_only: true\ncache:\n  max_size: 1GiB\nlog:\n  level: error\n")
	addr := startServe(t, "--config", cfgFile, "--root", filepath.Join(dir, "cache"))
	var o struct {
		Usage struct {
			Tracked  bool  `json:"tracked"`
			Indexing bool  `json:"indexing"`
			Cap      int64 `json:"cap_bytes"`
			FSTotal  int64 `json:"fs_total_bytes"`
			Used     int64 `json:"used_bytes"`
		} `json:"usage"`
	}
	deadline := time.Now().Add(20 * time.Second)
	for !o.Usage.Tracked {
		if time.Now().After(deadline) {
			t.Fatalf("usage never tracked: %+v", o.Usage)
		}
		time.Sleep(50 * time.Millisecond)
		resp, err := http.Get("http://" + addr + "/api/v1/overview")
		if err != nil {
			t.Fatal(err)
		}
		err = json.NewDecoder(resp.Body).Decode(&o)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
	}
	if o.Usage.Cap != 1<<30 || o.Usage.FSTotal <= 0 || o.Usage.Used != 0 {
		t.Errorf("usage: %+v", o.Usage)
	}
}
