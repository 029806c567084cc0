package imagelist

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
)

// Format names a kind of image list input.
type Format string

// The input formats [Parse] tells apart.
const (
	// FormatText is the images-list.txt form; see [ParseText].
	FormatText Format = "text"
	// FormatSkopeoSync is skopeo-sync's YAML; see [ParseSkopeoSync].
	FormatSkopeoSync Format = "skopeo-sync"
	// FormatKubernetes is Kubernetes objects in YAML or JSON; see
	// [ParseKubernetes].
	FormatKubernetes Format = "kubernetes"
)

// DetectFormat returns the format [Parse] would parse data as. Kubernetes
// objects are recognised by content (a mapping with kind or apiVersion),
// whatever the file name; otherwise a .yaml or .yml name or a YAML mapping
// means skopeo-sync, and anything else is a text list.
func DetectFormat(name string, data []byte) Format {
	switch {
	case looksKubernetes(data):
		return FormatKubernetes
	case isYAMLName(name) || isYAMLMapping(data):
		return FormatSkopeoSync
	}
	return FormatText
}

// KubeStats counts the objects of a Kubernetes input.
type KubeStats struct {
	// Documents is the number of non-empty YAML documents read.
	Documents int
	// Objects counts the workload objects whose images were read, by kind.
	Objects map[string]int
	// Skipped counts the objects of other kinds (Service, ConfigMap...),
	// by kind.
	Skipped map[string]int
}

// String summarises the counts, e.g. "3 objects (2 Deployment, 1 CronJob),
// 4 skipped (3 Service, 1 ConfigMap)".
func (s *KubeStats) String() string {
	if s == nil {
		return "no objects"
	}
	out := countKinds(s.Objects) + " with pods"
	if len(s.Skipped) > 0 {
		out += ", " + countKinds(s.Skipped) + " skipped"
	}
	return out
}

// countKinds formats "N objects (n1 Kind1, n2 Kind2)" with kinds sorted.
func countKinds(m map[string]int) string {
	total := 0
	parts := make([]string, 0, len(m))
	for _, k := range slices.Sorted(maps.Keys(m)) {
		total += m[k]
		parts = append(parts, strconv.Itoa(m[k])+" "+k)
	}
	if total == 0 {
		return "0 objects"
	}
	return fmt.Sprintf("%d objects (%s)", total, strings.Join(parts, ", "))
}
