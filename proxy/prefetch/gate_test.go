package prefetch_test

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stowage/stowage/proxy/internal/testenv"
	"github.com/stowage/stowage/proxy/prefetch"
)

// blobFile is where the filesystem store keeps a blob's data.
func blobFile(root, dgst string) string {
	algo, hex, _ := strings.Cut(dgst, ":")
	return filepath.Join(root, "docker", "registry", "v2", "blobs", algo, hex[:2], hex, "data")
}

// TestVerifyChecksTheStore: the rollout gate answers from the cache, not
// from the report: after a good run it passes (for an index, only the
// selected platform is needed); a layer or tag lost since, a failed image
// and a list problem each make it fail, named.
func TestVerifyChecksTheStore(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil, "")
	e.up.Push(t, "team/app:v1", testenv.DockerImage(t, 2, 4096))
	idx, imgs := testenv.MultiArchIndex(t)
	e.up.PushIndex(t, "team/multi:v1", idx)
	eng := e.engine()

	rep, err := eng.Run(t.Context(), prefetch.Request{Lists: []prefetch.NamedList{
		list(t, "l", "team/app:v1", "team/multi:v1")}, Platforms: []string{"linux/arm64"}}, nil)
	if err != nil || !rep.OK() {
		t.Fatalf("run: %v %+v", err, rep)
	}
	g, err := eng.Verify(t.Context(), rep)
	if err != nil || !g.Complete || g.Cached != 2 || len(g.Missing) != 0 {
		t.Fatalf("gate after a good run: %v %+v", err, g)
	}

	// A layer of the selected platform disappears from the cache.
	layers, _ := imgs["arm64"].Layers()
	ld, _ := layers[1].Digest()
	if err := os.Remove(blobFile(e.root, ld.String())); err != nil {
		t.Fatal(err)
	}
	// The tag of the other image is lost.
	if err := os.RemoveAll(filepath.Join(e.root, "docker", "registry", "v2", "repositories", "docker.io", "team", "app", "_manifests", "tags")); err != nil {
		t.Fatal(err)
	}
	g, err = eng.Verify(t.Context(), rep)
	if err != nil || g.Complete || g.Cached != 0 || len(g.Missing) != 2 {
		t.Fatalf("gate after losses: %v %+v", err, g)
	}
	if m := g.Missing[0]; m.Ref != "docker.io/team/app:v1" || m.Reason != "tag v1: not in the cache" {
		t.Errorf("missing[0] = %+v", m)
	}
	if m := g.Missing[1]; m.Ref != "docker.io/team/multi:v1" || !strings.HasPrefix(m.Reason, "linux/arm64: blob "+ld.String()+": not in the cache") {
		t.Errorf("missing[1] = %+v", m)
	}

	// A failed image and a bad list entry.
	rep, err = eng.Run(t.Context(), prefetch.Request{Lists: []prefetch.NamedList{
		list(t, "l2", "team/multi:v1", "team/none:v1", "Bad:Ref")}, Platforms: []string{"linux/arm64"}}, nil)
	if err != nil || rep.OK() {
		t.Fatalf("run: %v %+v", err, rep)
	}
	g, err = eng.Verify(t.Context(), rep)
	if err != nil || g.Complete || g.Cached != 1 || len(g.Missing) != 1 || len(g.Problems) != 1 {
		t.Fatalf("gate: %v %+v", err, g)
	}
	if m := g.Missing[0]; m.Ref != "docker.io/team/none:v1" || !strings.Contains(m.Reason, "manifest v1") {
		t.Errorf("missing = %+v", m)
	}
	var b strings.Builder
	if err := g.WriteText(&b); err != nil || !strings.Contains(b.String(), "NOT READY: 1 of 2 images fully cached, 1 missing, 1 problems") ||
		!strings.Contains(b.String(), "problem: l2:3: invalid image reference") {
		t.Errorf("gate text: %v\n%s", err, b.String())
	}

	// Nothing at all is not ready.
	if g, err := eng.Verify(t.Context(), &prefetch.Report{}); err != nil || g.Complete {
		t.Errorf("empty report: %v %+v", err, g)
	}
}

// TestAdminKubernetesBody: the admin API takes Kubernetes JSON (without a
// content type: not mistaken for a JobRequest) and YAML, and the job
// status answers the rollout gate.
func TestAdminKubernetesBody(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil, "")
	e.up.Push(t, "team/app:v1", testenv.DockerImage(t, 1, 2048))
	srv, _ := adminServer(t, e, 1)
	podJSON := `{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
 "spec": {"containers": [{"name": "app", "image": "team/app:v1"}]}}`
	var job prefetch.Job
	if resp := call(t, http.MethodPost, srv.URL+"/api/v1/prefetch?name=pod", testToken, "", podJSON, &job); resp.StatusCode != http.StatusAccepted {
		t.Fatalf("POST Kubernetes JSON: %d", resp.StatusCode)
	}
	if job.Complete {
		t.Fatal("a queued job is complete")
	}
	done := waitJob(t, srv.URL, job.ID)
	if done.State != prefetch.JobSucceeded || !done.Complete || len(done.Missing) != 0 {
		t.Fatalf("job: %+v", done)
	}

	stream := "apiVersion: v1\nkind: Service\n---\napiVersion: apps/v1\nkind: Deployment\nspec:\n  template:\n    spec:\n" +
		"      containers:\n      - image: team/app:v1\n      - image: team/gone:v1\n"
	if resp := call(t, http.MethodPost, srv.URL+"/api/v1/prefetch?name=deploy", testToken, "application/yaml", stream, &job); resp.StatusCode != http.StatusAccepted {
		t.Fatalf("POST Kubernetes YAML: %d", resp.StatusCode)
	}
	done = waitJob(t, srv.URL, job.ID)
	if done.State != prefetch.JobFailed || done.Complete || len(done.Missing) != 1 || done.Missing[0].Ref != "docker.io/team/gone:v1" {
		t.Fatalf("job: %+v", done)
	}

	// Only Services: refused, naming what was skipped.
	if resp := call(t, http.MethodPost, srv.URL+"/api/v1/prefetch", testToken, "", "apiVersion: v1\nkind: Service\n", nil); resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("no images: %d", resp.StatusCode)
	}
}
