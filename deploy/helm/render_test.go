package helm

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"maps"
	"path/filepath"
	"strings"
	"testing"

	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	kubefake "helm.sh/helm/v3/pkg/kube/fake"
	"helm.sh/helm/v3/pkg/release"
	"helm.sh/helm/v3/pkg/storage"
	"helm.sh/helm/v3/pkg/storage/driver"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

const (
	chartDir         = "stowage"
	allFeaturesFile  = "ci/all-features-values.yaml"
	multiReplicaFile = "ci/multi-replica-values.yaml"
	s3File           = "ci/s3-values.yaml"
	tlsFile          = "ci/tls-values.yaml"
	releaseName      = "stowage"
	namespace        = "cache"
	// kubeVersion is what the rendering assumes; keep it with .ci/helm-check.sh.
	kubeVersion = "v1.36.0"
)

// valueSets are the values every chart-wide test runs against.
var valueSets = map[string]string{
	"default":       "",
	"all-features":  allFeaturesFile,
	"multi-replica": multiReplicaFile,
	"s3":            s3File,
	"tls":           tlsFile,
}

// rendered is the output of one client-only install.
type rendered struct {
	docs  []doc
	notes string
}

// doc is one rendered Kubernetes object, as JSON.
type doc struct {
	source     string // the "# Source:" template path
	apiVersion string
	kind       string
	name       string
	json       []byte
}

// loadValues reads a values file ("" for none) and merges overrides on top.
func loadValues(t *testing.T, file string, overrides map[string]any) map[string]any {
	t.Helper()
	vals := map[string]any{}
	if file != "" {
		v, err := chartutil.ReadValuesFile(file)
		if err != nil {
			t.Fatalf("read %s: %v", file, err)
		}
		vals = v.AsMap()
	}
	return mergeValues(vals, overrides)
}

// mergeValues merges b into a (maps recursively, everything else replaced).
func mergeValues(a, b map[string]any) map[string]any {
	out := maps.Clone(a)
	for k, v := range b {
		if bm, ok := v.(map[string]any); ok {
			if am, ok := out[k].(map[string]any); ok {
				out[k] = mergeValues(am, bm)
				continue
			}
		}
		out[k] = v
	}
	return out
}

// renderChart renders the chart as `helm install --dry-run=client` does:
// values validated against values.schema.json, hooks included.
func renderChart(vals map[string]any) (*rendered, error) {
	return renderChartFor(kubeVersion, vals)
}

// renderChartFor renders for a cluster of the given Kubernetes version.
func renderChartFor(kubeVersion string, vals map[string]any) (*rendered, error) {
	chrt, err := loader.Load(chartDir)
	if err != nil {
		return nil, err
	}
	cfg := &action.Configuration{
		Releases:     storage.Init(driver.NewMemory()),
		KubeClient:   &kubefake.PrintingKubeClient{Out: io.Discard},
		Capabilities: chartutil.DefaultCapabilities,
		Log:          func(string, ...any) {},
	}
	install := action.NewInstall(cfg)
	install.ClientOnly = true
	install.DryRun = true
	install.DryRunOption = "client"
	install.ReleaseName = releaseName
	install.Namespace = namespace
	install.Replace = true
	kv, err := chartutil.ParseKubeVersion(kubeVersion)
	if err != nil {
		return nil, err
	}
	install.KubeVersion = kv
	install.APIVersions = chartutil.VersionSet{"monitoring.coreos.com/v1", "monitoring.coreos.com/v1/ServiceMonitor"}
	rel, err := install.Run(chrt, vals)
	if err != nil {
		return nil, err
	}
	return split(rel)
}

func split(rel *release.Release) (*rendered, error) {
	out := &rendered{notes: rel.Info.Notes}
	manifests := []string{rel.Manifest}
	for _, h := range rel.Hooks {
		manifests = append(manifests, "# Source: "+h.Path+"\n"+h.Manifest)
	}
	for _, m := range manifests {
		r := utilyaml.NewYAMLReader(bufio.NewReader(strings.NewReader(m)))
		for {
			raw, err := r.Read()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return nil, err
			}
			d, ok, err := parseDoc(raw)
			if err != nil {
				return nil, err
			}
			if ok {
				out.docs = append(out.docs, d)
			}
		}
	}
	return out, nil
}

func parseDoc(raw []byte) (doc, bool, error) {
	var d doc
	for _, line := range strings.Split(string(raw), "\n") {
		if s, ok := strings.CutPrefix(line, "# Source: "); ok {
			d.source = s
		}
	}
	// YAMLToJSONStrict rejects duplicate keys, which the API server would
	// otherwise resolve silently.
	js, err := yaml.YAMLToJSONStrict(raw)
	if err != nil {
		return d, false, err
	}
	if bytes.Equal(bytes.TrimSpace(js), []byte("null")) {
		return d, false, nil // an empty document (a template that rendered nothing)
	}
	var meta struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Metadata   struct {
			Name string `json:"name"`
		} `json:"metadata"`
	}
	if err := yaml.Unmarshal(js, &meta); err != nil {
		return d, false, err
	}
	d.apiVersion, d.kind, d.name, d.json = meta.APIVersion, meta.Kind, meta.Metadata.Name, js
	return d, true, nil
}

// mustRender renders one of valueSets with overrides, failing the test on error.
func mustRender(t *testing.T, file string, overrides map[string]any) *rendered {
	t.Helper()
	r, err := renderChart(loadValues(t, file, overrides))
	if err != nil {
		t.Fatalf("render %s: %v", filepath.Base(file), err)
	}
	return r
}

// find returns the one object of a kind whose name ends with suffix.
func (r *rendered) find(t *testing.T, kind, nameSuffix string) doc {
	t.Helper()
	var found []doc
	for _, d := range r.docs {
		if d.kind == kind && strings.HasSuffix(d.name, nameSuffix) {
			found = append(found, d)
		}
	}
	if len(found) != 1 {
		t.Fatalf("want one %s named *%s, found %d", kind, nameSuffix, len(found))
	}
	return found[0]
}

func (r *rendered) count(kind string) int {
	n := 0
	for _, d := range r.docs {
		if d.kind == kind {
			n++
		}
	}
	return n
}
