package imagelist

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestParseKubernetesFiles parses real-world shaped inputs: "helm template"
// of this repository's chart and of a chart with several images,
// "kubectl get -o yaml" and "-o json" Lists, a typed List straight from the
// API server, a Pod with init and ephemeral containers, and a stream with
// malformed documents.
func TestParseKubernetesFiles(t *testing.T) {
	t.Parallel()
	const apiDigest = "sha256:4f1ee5b7d3b4c3c5a6e0f7e2a1b6c8d9e0f1a2b3c4d5e6f708192a3b4c5d6e7f"
	tests := []struct {
		file     string
		refs     []string
		stats    string
		problems []wantProblem
	}{
		{file: "helm-stowage.yaml", // helm template deploy/helm/stowage -f deploy/helm/ci/all-features-values.yaml
			refs: []string{"427 docker.io/library/busybox:1.37", "549 ghcr.io/stowage/stowage:0.1.0-ci"},
			stats: "4 objects (1 CronJob, 1 DaemonSet, 1 Job, 1 StatefulSet) with pods, 13 objects (3 ConfigMap, " +
				"1 HorizontalPodAutoscaler, 1 Ingress, 1 NetworkPolicy, 1 PodDisruptionBudget, 1 Secret, 3 Service, " +
				"1 ServiceAccount, 1 ServiceMonitor) skipped"},
		{file: "helm-shop.yaml", // helm template shop testdata/kube/chart-shop
			refs: []string{
				"39 ghcr.io/acme/shop-api@" + apiDigest,
				"41 docker.io/library/redis:latest",
				"62 docker.io/flyway/flyway:10",
				"66 registry.corp.example:5000/shop/web:2.4.1",
				"87 docker.io/library/postgres:16.4-alpine",
				"114 quay.io/acme/reporter:1.0",
			},
			stats: "4 objects (1 CronJob, 2 Deployment, 1 StatefulSet) with pods, 3 objects (1 ConfigMap, 1 Pod (helm test), 1 Service) skipped"},
		{file: "kubectl-get-all.yaml", // kubectl get deploy,sts,ds -A -o yaml
			refs: []string{
				"54 registry.k8s.io/coredns/coredns:v1.11.1",
				"90 registry.corp.example:5000/shop/web:2.4.1",
				"92 docker.io/library/redis:latest",
				"95 docker.io/flyway/flyway:10",
				"115 docker.io/library/postgres:16.4-alpine@sha256:0a5b0c6e2b1f4d3c2b1a09f8e7d6c5b4a39281706f5e4d3c2b1a09f8e7d6c5b4",
				"145 registry.k8s.io/kube-proxy:v1.30.2",
				"149 docker.io/library/busybox:1.36",
			},
			stats: "4 objects (1 DaemonSet, 2 Deployment, 1 StatefulSet) with pods"},
		{file: "deployments.json", // kubectl get deploy -o json
			refs: []string{
				"26 ghcr.io/acme/shop-api@" + apiDigest,
				"30 docker.io/library/redis:latest",
				"50 registry.corp.example:5000/shop/web:2.4.1",
			},
			stats: "2 objects (2 Deployment) with pods"},
		{file: "deploymentlist-typed.yaml",
			refs:  []string{"16 registry.corp.example:5000/shop/web:2.4.1", "25 registry.corp.example:5000/shop/worker:latest"},
			stats: "2 objects (2 Deployment) with pods"},
		{file: "pod-debug.yaml",
			refs: []string{
				"9 docker.io/library/busybox:1.36",
				"12 registry.corp.example:5000/shop/web:2.4.1",
				"15 docker.io/nicolaka/netshoot:v0.13",
			},
			stats: "1 objects (1 Pod) with pods"},
		{file: "broken-stream.yaml",
			refs:  []string{"10 docker.io/library/alpine:3.20", "50 registry.corp.example:5000/legacy:1"},
			stats: "3 objects (1 Deployment, 1 Job, 1 ReplicationController) with pods, 1 objects (1 Service) skipped",
			problems: []wantProblem{
				{at: "broken-stream.yaml:20", msg: "syntax error: did not find expected ',' or ']'", is: ErrSyntax},
				{at: "broken-stream.yaml:32", msg: `Job bad-image: containers[0] "upper": invalid image reference "Shop/Web:1"`, is: ErrInvalidReference},
				{at: "broken-stream.yaml:33", msg: `Job bad-image: containers[1] "none": no image`, is: ErrInvalidReference},
			}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			t.Parallel()
			data, err := os.ReadFile(filepath.Join("testdata", "kube", tt.file))
			if err != nil {
				t.Fatal(err)
			}
			if f := DetectFormat(tt.file, data); f != FormatKubernetes {
				t.Errorf("detected as %s", f)
			}
			l, err := Parse(tt.file, strings.NewReader(string(data)))
			checkStrings(t, "refs", refLines(l), tt.refs)
			checkProblems(t, l, err, tt.problems)
			if l.Format != FormatKubernetes || l.Kubernetes.String() != tt.stats {
				t.Errorf("format %s, stats:\n got %s\nwant %s", l.Format, l.Kubernetes, tt.stats)
			}
			for _, r := range l.Refs {
				if r.Source.File != tt.file {
					t.Errorf("%s: source %s", r, r.Source)
				}
			}
		})
	}
}

// TestParseKubernetes covers the kinds, reference forms and odd shapes one
// by one.
func TestParseKubernetes(t *testing.T) {
	t.Parallel()
	pod := func(image string) string {
		return "    spec:\n      containers:\n      - name: c\n        image: " + image + "\n"
	}
	tests := []struct {
		name     string
		in       string
		refs     []string
		problems []wantProblem
	}{
		{name: "cron job", in: "apiVersion: batch/v1\nkind: CronJob\nspec:\n  jobTemplate:\n    spec:\n      template:\n        spec:\n          containers:\n          - image: alpine\n",
			refs: []string{"9 docker.io/library/alpine:latest"}},
		{name: "pod template", in: "apiVersion: v1\nkind: PodTemplate\ntemplate:\n" + pod("quay.io/a/b:1"),
			refs: []string{"7 quay.io/a/b:1"}},
		{name: "replica set of extensions/v1beta1", in: "apiVersion: extensions/v1beta1\nkind: ReplicaSet\nspec:\n  template:\n" + pod("nginx:1.27"),
			refs: []string{"8 docker.io/library/nginx:1.27"}},
		{name: "tag and digest both kept", in: "kind: Pod\nspec:\n  containers:\n  - image: nginx:1.27@" + dgst + "\n",
			refs: []string{"4 docker.io/library/nginx:1.27@" + dgst}},
		{name: "registry with port, Docker Hub aliases", in: "kind: Pod\nspec:\n  containers:\n  - image: localhost:5000/app\n  - image: index.docker.io/library/redis:7\n  - image: registry-1.docker.io/bitnami/redis:7\n",
			refs: []string{"4 localhost:5000/app:latest", "5 docker.io/library/redis:7", "6 docker.io/bitnami/redis:7"}},
		{name: "single JSON object", in: `{"kind":"Pod","spec":{"containers":[{"name":"a","image":"busybox"}]}}`,
			refs: []string{"1 docker.io/library/busybox:latest"}},
		{name: "JSON values one after the other (jq -c)", in: `{"kind":"Pod","spec":{"containers":[{"image":"a"}]}}` + "\n" +
			`{"kind":"Service"}` + "\n\n" + `{"kind":"Pod",` + "\n" + `"spec":{"containers":[{"image":"b"}]}}` + "\n" + `{"kind":"Pod","spec":{"containers":[{"image":"C"}]}}` + "\n{oops\n",
			refs: []string{"1 docker.io/library/a:latest", "5 docker.io/library/b:latest"},
			problems: []wantProblem{
				{at: "k.yaml:6", msg: `containers[0]: invalid image reference "C"`, is: ErrInvalidReference},
				{at: "k.yaml:7", msg: "syntax error", is: ErrSyntax},
			}},
		{name: "duplicates across documents, comment and flow markers", in: "--- # Source: a.yaml\nkind: Pod\nspec: {containers: [{image: alpine}]}\n--- {kind: Pod, spec: {containers: [{image: 'docker.io/library/alpine:latest'}, {image: redis}]}}\n...\n",
			refs: []string{"3 docker.io/library/alpine:latest", "4 docker.io/library/redis:latest"}},
		{name: "CRLF line ends", in: "kind: Pod\r\nspec:\r\n  containers:\r\n  - image: alpine\r\n---\r\nkind: Pod\r\nspec:\r\n  containers:\r\n  - image: redis\r\n",
			refs: []string{"4 docker.io/library/alpine:latest", "9 docker.io/library/redis:latest"}},
		{name: "List of Lists and typed list items", in: "kind: List\nitems:\n- kind: StatefulSetList\n  items:\n  - spec:\n      template:\n        spec:\n          containers:\n          - image: a/b:1\n",
			refs: []string{"9 docker.io/a/b:1"}},
		{name: "custom resources are skipped, even named Job", in: "apiVersion: batch.volcano.sh/v1alpha1\nkind: Job\nspec:\n  template:\n" + pod("x/y") + "---\nkind: Pod\nspec:\n  containers:\n  - image: z\n",
			refs: []string{"13 docker.io/library/z:latest"}},
		{name: "helm test hooks are skipped, other hooks kept", in: "kind: Pod\nmetadata:\n  annotations:\n    helm.sh/hook: test\nspec: {containers: [{image: curl}]}\n---\n" +
			"kind: Job\nmetadata:\n  annotations: {helm.sh/hook: 'pre-install,pre-upgrade'}\nspec: {template: {spec: {containers: [{image: migrate}]}}}\n",
			refs: []string{"10 docker.io/library/migrate:latest"}},
		{name: "anchors and aliases", in: "kind: Pod\nspec:\n  containers:\n  - &c {name: a, image: alpine}\n  initContainers: [*c]\n",
			refs: []string{"4 docker.io/library/alpine:latest"}},
		{name: "pod without containers", in: "kind: Pod\nmetadata: {name: p}\nspec:\n  restartPolicy: Never\n---\nkind: Pod\nspec: {containers: [{image: a}]}\n",
			refs:     []string{"7 docker.io/library/a:latest"},
			problems: []wantProblem{{at: "k.yaml:4", msg: "Pod p: no containers", is: ErrInvalidValue}}},
		{name: "no images at all", in: "apiVersion: v1\nkind: Service\n---\napiVersion: v1\nkind: ConfigMap\n",
			problems: []wantProblem{{at: "k.yaml", msg: "no container image in 0 objects with pods, 2 objects (1 ConfigMap, 1 Service) skipped", is: ErrNoImages}}},
		{name: "workload without pod spec", in: "kind: Deployment\nmetadata: {name: web, namespace: shop}\nspec: {replicas: 1}\n---\nkind: Pod\nspec:\n  containers:\n  - image: a\n",
			refs:     []string{"8 docker.io/library/a:latest"},
			problems: []wantProblem{{at: "k.yaml:1", msg: "Deployment shop/web: no pod spec at spec.template.spec", is: ErrInvalidValue}}},
		{name: "bad shapes", in: "kind: Pod\nspec:\n  containers: x\n---\n- a\n---\nmetadata: {}\n---\nkind: Pod\nspec:\n  initContainers: [x]\n  containers:\n  - image: [a]\n  - image: ok\n",
			refs: []string{"14 docker.io/library/ok:latest"},
			problems: []wantProblem{
				{at: "k.yaml:3", msg: "Pod: containers: want a list", is: ErrInvalidValue},
				{at: "k.yaml:5", msg: "want a Kubernetes object", is: ErrInvalidValue},
				{at: "k.yaml:7", msg: "no kind", is: ErrInvalidValue},
				{at: "k.yaml:11", msg: "initContainers[0]: want a container", is: ErrInvalidValue},
				{at: "k.yaml:13", msg: "containers[0]: image: want a string", is: ErrInvalidValue},
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			l, err := Parse("k.yaml", strings.NewReader(tt.in))
			if l.Format != FormatKubernetes {
				t.Fatalf("parsed as %s", l.Format)
			}
			checkStrings(t, "refs", refLines(l), tt.refs)
			checkProblems(t, l, err, tt.problems)
		})
	}
}

func TestDetectFormat(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, file, in string
		want           Format
	}{
		{"kubernetes yaml", "app.yaml", "apiVersion: v1\nkind: Pod\n", FormatKubernetes},
		{"kubernetes without extension", "-", "# Source: x\n---\n---\nkind: Pod\n", FormatKubernetes},
		{"kubernetes after a malformed document", "-", "a: [\n---\nkind: Pod\n", FormatKubernetes},
		{"kubernetes json", "list.txt", "{\n \"kind\": \"List\",\n \"items\": []\n}\n", FormatKubernetes},
		{"kubernetes json values (jq -c)", "-", "{\"kind\":\"Pod\"}\n{\"kind\":\"Pod\"}\n", FormatKubernetes},
		{"skopeo-sync", "sync", "quay.io:\n  images:\n    a: [\"1\"]\n", FormatSkopeoSync},
		{"skopeo-sync with later kind", "sync", "quay.io: {}\n---\nkind: Pod\n", FormatSkopeoSync},
		{"text", "images.txt", "nginx\nredis:7\n", FormatText},
		{"text with IPv6 host", "list", "[::1]:5000/x:y\n", FormatText},
		{"empty", "list", "", FormatText},
	}
	for _, tt := range tests {
		if got := DetectFormat(tt.file, []byte(tt.in)); got != tt.want {
			t.Errorf("%s: %s, want %s", tt.name, got, tt.want)
		}
	}
}

func TestParseKubernetesLimits(t *testing.T) {
	t.Parallel()
	// Alias bombs: each level names the previous one many times. Deep
	// nesting stops at maxListDepth, wide nesting at maxKubeNodes.
	bomb := func(levels, width int) string {
		var b strings.Builder
		b.WriteString("kind: List\nitems:\n- &l0 {kind: Pod, spec: {containers: [{image: a}]}}\n")
		for i := 1; i <= levels; i++ {
			b.WriteString("- &l" + strconv.Itoa(i) + " {kind: List, items: [")
			for j := range width {
				if j > 0 {
					b.WriteString(", ")
				}
				b.WriteString("*l" + strconv.Itoa(i-1))
			}
			b.WriteString("]}\n")
		}
		return b.String()
	}
	l, err := ParseKubernetes("deep.yaml", strings.NewReader(bomb(8, 2)))
	if len(l.Refs) != 1 || !errors.Is(err, ErrInvalidValue) || !strings.Contains(err.Error(), "nested deeper") {
		t.Fatalf("deep: refs %v, err %v", l.Refs, err)
	}
	l, err = ParseKubernetes("wide.yaml", strings.NewReader(bomb(3, 200)))
	if len(l.Refs) != 1 || !errors.Is(err, ErrInputTooLarge) {
		t.Fatalf("wide: refs %v, err %v", l.Refs, err)
	}
	// Documents are bounded (blank ones cost nothing and do not count).
	many := strings.Repeat("---\n# nothing\n", 50000) + strings.Repeat("---\nkind: Pod\nspec: {containers: [{image: a}]}\n", maxKubeDocuments+5)
	l, err = ParseKubernetes("many.yaml", strings.NewReader(many))
	if len(l.Refs) != 1 || l.Kubernetes.Documents != maxKubeDocuments || !errors.Is(err, ErrInputTooLarge) ||
		l.Problems[0].Source.Line != 100001+3*maxKubeDocuments {
		t.Fatalf("many documents: %d refs, %d documents, %v", len(l.Refs), l.Kubernetes.Documents, err)
	}
	big := strings.Repeat("# comment\n", MaxInputSize/10+1)
	if _, err := ParseKubernetes("big", strings.NewReader(big)); !errors.Is(err, ErrInputTooLarge) {
		t.Fatalf("big input: %v", err)
	}
}
