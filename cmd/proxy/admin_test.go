package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stowage/stowage/proxy/prefetch"
)

// TestServeAdminAndSchedule runs "serve" with an admin token and a
// schedule: the schedule prefetches prefetch.images, the admin API lists
// the job (with the token only), and the registry API still answers.
func TestServeAdminAndSchedule(t *testing.T) {
	t.Parallel()
	url, dgst := upstreamWith(t)
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte("tok\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfgFile := writeConfig(t, dir, fmt.Sprintf(`upstreams:
  docker.io:
    endpoints: [%q]
admin:
  token_file: %q
prefetch:
  images: ["team/app:v1"]
  schedule: "@every 1s"
log:
  level: error
`, url, tokenFile))
	addr := startServe(t, "--config", cfgFile, "--root", filepath.Join(dir, "cache"))

	get := func(path, token string) (*http.Response, []byte) {
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://"+addr+path, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return nil, nil
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
		return resp, b
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		if time.Now().After(deadline) {
			t.Fatal("no successful scheduled job")
		}
		time.Sleep(100 * time.Millisecond)
		resp, body := get("/api/v1/prefetch", "tok")
		if resp == nil || resp.StatusCode != http.StatusOK {
			continue
		}
		var list struct{ Jobs []prefetch.Job }
		if err := json.Unmarshal(body, &list); err != nil {
			t.Fatal(err)
		}
		if len(list.Jobs) > 0 && list.Jobs[len(list.Jobs)-1].State == prefetch.JobSucceeded {
			_, body := get("/api/v1/prefetch/"+list.Jobs[len(list.Jobs)-1].ID, "tok")
			var j prefetch.Job
			if err := json.Unmarshal(body, &j); err != nil || j.Name != "schedule" || j.Report == nil ||
				string(j.Report.Images[0].Digest) != dgst {
				t.Fatalf("job: %v %s", err, body)
			}
			break
		}
	}
	if resp, _ := get("/api/v1/prefetch", "wrong"); resp == nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("wrong token: %v", resp)
	}
	if resp, _ := get("/v2/", ""); resp == nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("/v2/: %v", resp)
	}

	// "prefetch --server" posts a list and follows the job.
	listFile := filepath.Join(dir, "remote.txt")
	if err := os.WriteFile(listFile, []byte("team/app:v1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	cmd := newRootCmd()
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	cmd.SetArgs([]string{"prefetch", "--server", "http://" + addr, "--token-file", tokenFile, "-f", listFile, "-o", "json"})
	if err := cmd.ExecuteContext(t.Context()); err != nil {
		t.Fatalf("prefetch --server: %v\n%s", err, errOut.String())
	}
	var rep prefetch.Report
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil || !rep.OK() || string(rep.Images[0].Digest) != dgst {
		t.Fatalf("remote report: %v %s", err, out.String())
	}
	cmd = newRootCmd()
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	cmd.SetArgs([]string{"prefetch", "--server", "http://" + addr, "--token-file", cfgFile, "-f", listFile})
	if err := cmd.ExecuteContext(t.Context()); err == nil {
		t.Fatal("prefetch --server with a wrong token succeeded")
	}
}

// TestServeAdminDisabled: without a token the admin API does not exist.
func TestServeAdminDisabled(t *testing.T) {
	t.Parallel()
	addr := startServe(t, "--root", t.TempDir(), "--log-level", "error")
	resp, err := http.Get("http://" + addr + "/api/v1/prefetch")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("admin API without token: %d", resp.StatusCode)
	}
}
