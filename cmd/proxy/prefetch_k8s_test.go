package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/stowage/stowage/proxy/prefetch"
)

// upstreamWithImages runs an in-process registry holding a random image
// under each of repoTags ("team/app:v1") and returns its URL and the
// digests by repoTag.
func upstreamWithImages(t *testing.T, repoTags ...string) (string, map[string]string) {
	t.Helper()
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	digests := map[string]string{}
	for _, rt := range repoTags {
		img := pushImage(t, srv.URL, rt, 2048, 2, remote.WithTransport(srv.Client().Transport))
		d, _ := img.Digest()
		digests[rt] = d.String()
	}
	return srv.URL, digests
}

// helmStream is shaped like "helm template" output: workloads between
// Services and ConfigMaps, with init containers and a CronJob.
func helmStream(images ...string) string {
	return fmt.Sprintf(`---
# Source: shop/templates/service.yaml
apiVersion: v1
kind: Service
metadata:
  name: shop
spec:
  ports:
    - port: 80
---
# Source: shop/templates/configmap.yaml
apiVersion: v1
kind: ConfigMap
metadata:
  name: shop
data:
  image: not/an-image:0
---
# Source: shop/templates/deployment.yaml
apiVersion: apps/v1
kind: Deployment
metadata:
  name: shop
spec:
  template:
    spec:
      initContainers:
        - name: init
          image: %s
      containers:
        - name: app
          image: %s
---
# Source: shop/templates/cronjob.yaml
apiVersion: batch/v1
kind: CronJob
metadata:
  name: shop-report
spec:
  schedule: "0 3 * * *"
  jobTemplate:
    spec:
      template:
        spec:
          containers:
            - name: report
              image: %s
`, images[0], images[1], images[2])
}

// runPrefetch runs "proxy prefetch args..." with stdin and returns
// stdout, stderr and the error.
func runPrefetch(t *testing.T, stdin string, args ...string) (string, string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	cmd := newRootCmd()
	cmd.SetIn(strings.NewReader(stdin))
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	cmd.SetArgs(append([]string{"prefetch"}, args...))
	err := cmd.ExecuteContext(t.Context())
	return out.String(), errOut.String(), err
}

// TestPrefetchKubernetesStdinWait is the rollout pipeline on the cache
// directory: "helm template ... | proxy prefetch -f - --wait" caches every
// image of the stream's workloads and passes the gate; with one image
// missing upstream it exits 2 naming that image.
func TestPrefetchKubernetesStdinWait(t *testing.T) {
	t.Parallel()
	url, digests := upstreamWithImages(t, "team/init:1", "team/app:v1", "team/report:2")
	root := filepath.Join(t.TempDir(), "cache")
	args := []string{"--root", root, "--upstream", "docker.io=" + url, "--log-level", "error", "-f", "-", "--wait", "-o", "json"}

	out, errOut, err := runPrefetch(t, helmStream("team/init:1", "team/app:v1", "team/report:2"), args...)
	if err != nil {
		t.Fatalf("prefetch: %v\n%s\n%s", err, out, errOut)
	}
	var rep prefetch.Report
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("report is not JSON: %v\n%s", err, out)
	}
	if len(rep.Images) != 3 || !rep.OK() {
		t.Fatalf("report: %+v", rep)
	}
	for _, want := range []string{
		"stdin: 3 images from Kubernetes objects: 2 objects (1 CronJob, 1 Deployment) with pods, 2 objects (1 ConfigMap, 1 Service) skipped",
		"rollout gate: ready: all 3 images are fully cached",
	} {
		if !strings.Contains(errOut, want) {
			t.Errorf("stderr lacks %q:\n%s", want, errOut)
		}
	}
	store := newStoreAt(t, root)
	for rt, d := range digests {
		repo, tag, _ := strings.Cut(rt, ":")
		if got, err := store.GetTag(t.Context(), "docker.io/"+repo, tag); err != nil || got.Digest.String() != d {
			t.Errorf("cached %s: %v %v", rt, got, err)
		}
	}
	if pin, err := store.GetPin(t.Context(), "stdin"); err != nil || len(pin.Images) != 3 {
		t.Errorf("pin: %v %+v", err, pin)
	}

	// One image of the rollout is not upstream: the gate fails and names it.
	_, errOut, err = runPrefetch(t, helmStream("team/init:1", "team/app:v1", "team/gone:3"), append(args, "--name", "shop")...)
	var ee exitError
	if !errors.As(err, &ee) || ee.code != 2 {
		t.Fatalf("want exit status 2, got %v\n%s", err, errOut)
	}
	for _, want := range []string{
		"rollout gate: NOT READY: 2 of 3 images fully cached, 1 missing",
		"missing: docker.io/team/gone:3: manifest 3:",
	} {
		if !strings.Contains(errOut, want) {
			t.Errorf("stderr lacks %q:\n%s", want, errOut)
		}
	}
}

// TestPrefetchKubernetesInputErrors: a stream without any image is an
// error before anything runs; a bad image is reported with its line and
// fails the gate, the other images still load.
func TestPrefetchKubernetesInputErrors(t *testing.T) {
	t.Parallel()
	url, _ := upstreamWithImages(t, "team/app:v1")
	root := filepath.Join(t.TempDir(), "cache")
	base := []string{"--root", root, "--upstream", "docker.io=" + url, "--log-level", "error", "--wait"}

	_, _, err := runPrefetch(t, "apiVersion: v1\nkind: Service\n---\napiVersion: v1\nkind: ConfigMap\n", append(base, "-f", "-")...)
	if err == nil || !strings.Contains(err.Error(), "stdin: no container image in 0 objects with pods, 2 objects (1 ConfigMap, 1 Service) skipped") {
		t.Fatalf("no images: %v", err)
	}
	if _, _, err := runPrefetch(t, "", append(base, "-f", "-", "-f", "-")...); err == nil {
		t.Fatal("stdin twice: no error")
	}

	manifest := filepath.Join(t.TempDir(), "app.json")
	doc := `{"kind": "List", "items": [
  {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "a"},
   "spec": {"template": {"spec": {"containers": [{"name": "a", "image": "team/app:v1"}]}}}},
  {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "b"},
   "spec": {"template": {"spec": {"containers": [{"name": "b", "image": "Team/App"}]}}}}
]}`
	if err := os.WriteFile(manifest, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	out, errOut, err := runPrefetch(t, "", append(base, "-f", manifest)...)
	var ee exitError
	if !errors.As(err, &ee) || ee.code != 2 {
		t.Fatalf("want exit status 2, got %v\n%s", err, errOut)
	}
	want := manifest + `:5: Deployment b: containers[0] "b": invalid image reference "Team/App"`
	if !strings.Contains(out, "problem: "+want) || !strings.Contains(errOut, "problem: "+want) ||
		!strings.Contains(out, "docker.io/team/app:v1") || !strings.Contains(errOut, "1 of 1 images fully cached, 0 missing, 1 problems") {
		t.Fatalf("report:\n%s\nstderr:\n%s", out, errOut)
	}
}

// TestPrefetchKubernetesServerWait is the same pipeline through a running
// server: the stream goes to the admin API (Kubernetes is detected there
// too), and --wait answers from the job's complete and missing fields.
func TestPrefetchKubernetesServerWait(t *testing.T) {
	t.Parallel()
	url, _ := upstreamWithImages(t, "team/init:1", "team/app:v1", "team/report:2")
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte("tok\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfgFile := writeConfig(t, dir, fmt.Sprintf("upstreams:\n  docker.io:\n    endpoints: [%q]\nadmin:\n  token_file: %q\nlog:\n  level: error\n", url, tokenFile))
	addr := startServe(t, "--config", cfgFile, "--root", filepath.Join(dir, "cache"))
	args := []string{"--server", "http://" + addr, "--token-file", tokenFile, "-f", "-", "--wait", "--name", "shop"}

	out, errOut, err := runPrefetch(t, helmStream("team/init:1", "team/app:v1", "team/report:2"), args...)
	if err != nil {
		t.Fatalf("prefetch --server --wait: %v\n%s\n%s", err, out, errOut)
	}
	if !strings.Contains(errOut, "rollout gate: ready: all 3 images are fully cached") || !strings.Contains(out, "3 images (0 failed)") {
		t.Fatalf("stdout:\n%s\nstderr:\n%s", out, errOut)
	}

	out, errOut, err = runPrefetch(t, helmStream("team/init:1", "team/gone:9", "team/report:2"), args...)
	var ee exitError
	if !errors.As(err, &ee) || ee.code != 2 {
		t.Fatalf("want exit status 2, got %v\n%s\n%s", err, out, errOut)
	}
	if !strings.Contains(errOut, "NOT READY: 2 of 3 images fully cached, 1 missing") || !strings.Contains(errOut, "missing: docker.io/team/gone:9: ") {
		t.Fatalf("stderr:\n%s", errOut)
	}
}
