package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stowage/stowage/storage/storagetest"
)

const manifestAccept = "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json, " +
	"application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json"

// call makes one request and returns its status and Docker-Content-Digest,
// reading the whole body.
func call(t *testing.T, method, url string, header ...string) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", manifestAccept)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	return resp.StatusCode, resp.Header.Get("Docker-Content-Digest")
}

func mustStatus(t *testing.T, want, got int, what string) {
	t.Helper()
	if got != want {
		t.Fatalf("%s: status %d, want %d", what, got, want)
	}
}

// dashboardPulls reads the pulls the dashboard lists per repository.
func dashboardPulls(t *testing.T, addr string) map[string]int64 {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/api/v1/repositories")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Repositories []struct {
			Name     string     `json:"name"`
			Pulls    int64      `json:"pulls"`
			LastPull *time.Time `json:"last_pull"`
		} `json:"repositories"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("/api/v1/repositories: %d %v", resp.StatusCode, err)
	}
	out := map[string]int64{}
	for _, r := range body.Repositories {
		if (r.Pulls > 0) != (r.LastPull != nil) {
			t.Errorf("%s: %d pulls, last pull %v", r.Name, r.Pulls, r.LastPull)
		}
		out[r.Name] = r.Pulls
	}
	return out
}

// statsPulls runs "proxy stats --json" and returns its pull ranking.
func statsPulls(t *testing.T, root string) []repoStats {
	t.Helper()
	out, err := runOut(t, "stats", "--root", root, "--json", "--log-level", "error")
	if err != nil {
		t.Fatalf("stats: %v\n%s", err, out)
	}
	var st cacheStats
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("stats --json: %v\n%s", err, out)
	}
	return st.TopByPulls
}

func wantPulls(t *testing.T, got []repoStats, want []string, counts []int64, after time.Time) {
	t.Helper()
	ok := len(got) == len(want)
	for i := 0; ok && i < len(want); i++ {
		ok = got[i].Repo == want[i] && got[i].Pulls == counts[i] && !got[i].LastPull.Before(after.Truncate(time.Second))
	}
	if !ok {
		t.Fatalf("top by pulls: %+v\nwant %v with %v pulls, last pulls after %s", got, want, counts, after)
	}
}

// TestPullsPerRepository pulls through a real upstream registry with two
// servers on one cache directory (two replicas), then with one restarted:
// "proxy stats --json" shows the exact merged counts, with a last pull
// time, and the dashboard lists them. Only GETs of a manifest answered 200
// count: HEADs, 304s, 404s and blob GETs do not.
func TestPullsPerRepository(t *testing.T) {
	t.Parallel()
	up := storagetest.StartStockRegistry(t, t.TempDir())
	img := up.PushRandom(t, "library/app:v1", 1, 1024)
	up.PushRandom(t, "library/other:v1", 1, 1024)
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	layer, err := layers[0].Digest()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	root := filepath.Join(dir, "cache")
	cfgFile := writeConfig(t, dir, fmt.Sprintf("upstreams:\n  docker.io:\n    endpoints: [%q]\n    internal: true\nui:\n  public_read_only: true\nlog:\n  level: error\n", "http://"+up.Host))
	start := time.Now()
	a, stopA := serveUntilStopped(t, "--config", cfgFile, "--root", root)
	b, stopB := serveUntilStopped(t, "--config", cfgFile, "--root", root)
	const app, other = "docker.io/library/app", "docker.io/library/other"

	// On a: app by tag twice (a miss, then a hit) and by digest once;
	// other once. None of the rest counts.
	status, dgst := call(t, http.MethodGet, "http://"+a+"/v2/library/app/manifests/v1")
	mustStatus(t, http.StatusOK, status, "GET app:v1")
	status, _ = call(t, http.MethodGet, "http://"+a+"/v2/library/app/manifests/v1")
	mustStatus(t, http.StatusOK, status, "GET app:v1 again")
	status, _ = call(t, http.MethodGet, "http://"+a+"/v2/library/app/manifests/"+dgst)
	mustStatus(t, http.StatusOK, status, "GET app by digest")
	status, _ = call(t, http.MethodGet, "http://"+a+"/v2/library/other/manifests/v1")
	mustStatus(t, http.StatusOK, status, "GET other:v1")
	for range 2 {
		status, _ = call(t, http.MethodHead, "http://"+a+"/v2/library/app/manifests/v1")
		mustStatus(t, http.StatusOK, status, "HEAD app:v1")
	}
	status, _ = call(t, http.MethodGet, "http://"+a+"/v2/library/app/manifests/v1", "If-None-Match", `"`+dgst+`"`)
	mustStatus(t, http.StatusNotModified, status, "conditional GET app:v1")
	status, _ = call(t, http.MethodGet, "http://"+a+"/v2/library/app/manifests/nosuchtag")
	mustStatus(t, http.StatusNotFound, status, "GET app:nosuchtag")
	status, _ = call(t, http.MethodGet, "http://"+a+"/v2/library/app/blobs/"+layer.String())
	mustStatus(t, http.StatusOK, status, "GET the layer")
	// On b: app twice.
	for range 2 {
		status, _ = call(t, http.MethodGet, "http://"+b+"/v2/library/app/manifests/v1")
		mustStatus(t, http.StatusOK, status, "GET app:v1 on b")
	}
	if got := dashboardPulls(t, a); got[app] != 3 || got[other] != 1 {
		t.Errorf("dashboard of a: %v, want app 3 and other 1", got)
	}
	stopA()
	stopB()
	wantPulls(t, statsPulls(t, root), []string{app, other}, []int64{5, 1}, start)

	// A restart restores the counts; its pulls add to them.
	restarted := time.Now()
	c, stopC := serveUntilStopped(t, "--config", cfgFile, "--root", root)
	if got := dashboardPulls(t, c); got[app] != 5 || got[other] != 1 {
		t.Errorf("dashboard after a restart: %v, want app 5 and other 1", got)
	}
	for range 5 {
		status, _ = call(t, http.MethodGet, "http://"+c+"/v2/library/other/manifests/v1")
		mustStatus(t, http.StatusOK, status, "GET other:v1 after the restart")
	}
	stopC()
	got := statsPulls(t, root)
	wantPulls(t, got, []string{other, app}, []int64{6, 5}, start)
	if got[0].LastPull.Before(restarted.Truncate(time.Second)) {
		t.Errorf("other's last pull %s, want after the restart at %s", got[0].LastPull, restarted)
	}
	text, err := runOut(t, "stats", "--root", root, "--log-level", "error")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(text, "most pulled") || !strings.Contains(text, other+"  6") {
		t.Errorf("text output:\n%s", text)
	}
}
