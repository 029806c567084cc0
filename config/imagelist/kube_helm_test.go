package imagelist

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
)

// TestParseHelmTemplateLive renders this repository's chart and the test
// chart with a real helm, when one is at hand ($HELM, as .ci/helm-check.sh
// builds it, or helm on PATH), and checks that the images read from the
// live output are those of the rendered copies in testdata/kube (so those
// stay current). Without helm it is skipped; the copies are tested anyway.
func TestParseHelmTemplateLive(t *testing.T) {
	t.Parallel()
	helm := os.Getenv("HELM")
	if helm == "" {
		helm, _ = exec.LookPath("helm")
	}
	if helm == "" {
		t.Skip("no helm: set HELM to run it")
	}
	tests := []struct {
		copy string
		args []string
	}{
		{"helm-stowage.yaml", []string{"template", "rel", filepath.Join("..", "..", "deploy", "helm", "stowage"),
			"-f", filepath.Join("..", "..", "deploy", "helm", "ci", "all-features-values.yaml"), "--namespace", "registry"}},
		{"helm-shop.yaml", []string{"template", "shop", filepath.Join("testdata", "kube", "chart-shop"), "--namespace", "shop"}},
	}
	for _, tt := range tests {
		t.Run(tt.copy, func(t *testing.T) {
			t.Parallel()
			out, err := exec.CommandContext(t.Context(), helm, tt.args...).Output()
			if err != nil {
				t.Fatalf("helm %v: %v", tt.args, err)
			}
			live, err := ParseKubernetes("live", bytes.NewReader(out))
			if err != nil {
				t.Fatalf("live output: %v", err)
			}
			data, err := os.ReadFile(filepath.Join("testdata", "kube", tt.copy))
			if err != nil {
				t.Fatal(err)
			}
			saved, _ := ParseKubernetes(tt.copy, bytes.NewReader(data))
			images := func(l *List) []string {
				var out []string
				for _, r := range l.Refs {
					out = append(out, r.String())
				}
				slices.Sort(out)
				return out
			}
			if got, want := images(live), images(saved); !slices.Equal(got, want) {
				t.Errorf("helm %v renders images %q, testdata/kube/%s has %q: regenerate it (see testdata/kube/README.md)",
					tt.args, got, tt.copy, want)
			}
			if !bytes.Equal(out, data) {
				t.Logf("testdata/kube/%s differs from the live output (the images agree)", tt.copy)
			}
		})
	}
}
