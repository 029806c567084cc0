package imagelist

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func FuzzParseKubernetes(f *testing.F) {
	addSeeds(f)
	files, _ := filepath.Glob(filepath.Join("testdata", "kube", "*.*"))
	for _, path := range files {
		if data, err := os.ReadFile(path); err == nil {
			f.Add(string(data))
		}
	}
	for _, s := range []string{
		"kind: Pod\nspec: {containers: [{image: a}], initContainers: [{image: 'b@sha256:" + strings.Repeat("cd", 32) + "'}]}\n",
		"--- {kind: List, items: [{kind: Job, spec: {template: {spec: {containers: [{image: x}]}}}}]}\n...\n",
		"kind: DeploymentList\nitems:\n- &d {spec: {template: {spec: {containers: [{image: y}]}}}}\n- *d\n",
		"{\"kind\":\"Pod\",\"spec\":{\"containers\":[{\"image\":\"a\"}]}}\n{\"kind\":\"Service\"}\n{oops\n",
		"{\"kind\":\"CronJob\",\"spec\":{\"jobTemplate\":{\"spec\":{\"template\":{\"spec\":{\"ephemeralContainers\":[{\"image\":\"z\"}]}}}}}}",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		l, err := ParseKubernetes("k.yaml", strings.NewReader(in))
		checkFuzzList(t, l, err, yamlMaxLines(in))
		if l.Format != FormatKubernetes || l.Kubernetes == nil {
			t.Errorf("format %s, stats %v", l.Format, l.Kubernetes)
		}
		if len(l.Refs) == 0 && err == nil {
			t.Error("no images and no error")
		}
	})
}
