package imagelist

import (
	"errors"
	"fmt"
	"io"
	"strings"

	"go.yaml.in/yaml/v3"
)

// ErrNoImages marks Kubernetes input that names no container image at all
// (e.g. only Services and ConfigMaps): nothing a rollout would pull.
var ErrNoImages = errors.New("no container image")

// maxKubeNodes bounds the YAML nodes one Kubernetes input may make the
// parser visit: aliases let a small document name the same subtree many
// times over.
const maxKubeNodes = 1 << 18

// maxListDepth bounds Lists nested in Lists.
const maxListDepth = 4

// maxKubeDocuments bounds the non-empty documents of one input: each costs
// a YAML parser, and a chart renders tens of them, not many thousands.
const maxKubeDocuments = 10000

// ParseKubernetes parses Kubernetes objects in YAML or JSON: a single
// object, a multi-document stream ("---" separated, as "helm template"
// writes it), JSON objects one after the other ("jq -c '.items[]'") or a
// List (kind: List, or a typed list such as DeploymentList, as
// "kubectl get -o yaml" writes it). It collects the
// images of the containers, init containers and ephemeral containers of
// Pods, PodTemplates, Deployments, StatefulSets, DaemonSets, ReplicaSets,
// ReplicationControllers, Jobs and CronJobs, normalised as the kubelet
// does (docker.io, library/ for single names, the tag "latest" when
// neither tag nor digest is given), each once, with the line of its image
// field.
//
// Objects of other kinds (Services, ConfigMaps, custom resources) and Helm
// test hooks (which only "helm test" runs) are skipped and counted in
// List.Kubernetes. A malformed document, a workload without pod template
// and a missing or invalid image are recorded in List.Problems with their
// line; the other documents still load. Input
// naming no image at all is a problem wrapping [ErrNoImages]. As for the
// other parsers, the List is never nil and the error is [List.Err].
func ParseKubernetes(name string, r io.Reader) (*List, error) {
	l := newList()
	l.Format = FormatKubernetes
	l.Kubernetes = &KubeStats{Objects: map[string]int{}, Skipped: map[string]int{}}
	data, err := readAll(r)
	if err != nil {
		l.problem(Source{File: name}, err)
		return l, l.Err()
	}
	p := &kubeParser{l: l, file: name, budget: maxKubeNodes, parsed: map[string]error{}}
	docs := 0
	for d := range documents(data) {
		if blankDocument(d.text) {
			continue
		}
		if docs++; docs > maxKubeDocuments {
			l.problem(Source{File: name, Line: d.line}, fmt.Errorf("%w: more than %d documents", ErrInputTooLarge, maxKubeDocuments))
			break
		}
		p.document(d)
	}
	if len(l.Refs) == 0 {
		l.problem(Source{File: name}, fmt.Errorf("%w in %s", ErrNoImages, l.Kubernetes))
	}
	return l, l.Err()
}

// kubeParser walks the documents of one Kubernetes input into l.
type kubeParser struct {
	l      *List
	file   string
	offset int              // lines before the current document
	budget int              // nodes left to visit
	parsed map[string]error // images already parsed, and their error
}

// at returns the Source of node n in the current document.
func (p *kubeParser) at(n *yaml.Node) Source {
	return Source{File: p.file, Line: n.Line + p.offset}
}

// report records a problem at node n.
func (p *kubeParser) report(n *yaml.Node, err error) {
	p.l.problem(p.at(n), err)
}

// document decodes one document and walks its object.
func (p *kubeParser) document(d document) {
	p.offset = d.line - 1
	var doc yaml.Node
	if err := yaml.Unmarshal(d.text, &doc); err != nil {
		line := yamlErrorLine(err) + p.offset
		p.l.problem(Source{File: p.file, Line: line}, fmt.Errorf("%w: %s", ErrSyntax, yamlErrorText(err)))
		return
	}
	root := &doc
	if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
		root = root.Content[0]
	}
	if isNull(root) {
		return
	}
	p.l.Kubernetes.Documents++
	p.object(resolve(root), "", 0)
}

// object handles one Kubernetes object. listKind is the kind of the
// typed List it is an item of ("" at top level): the API server leaves
// kind out of the items of a typed List.
func (p *kubeParser) object(n *yaml.Node, listKind string, depth int) {
	if !p.spend() {
		return
	}
	if n.Kind != yaml.MappingNode {
		p.report(n, fmt.Errorf("%w: want a Kubernetes object (a mapping with kind)", ErrInvalidValue))
		return
	}
	kind := p.str(field(n, "kind"))
	if kind == "" {
		kind = strings.TrimSuffix(listKind, "List")
	}
	if kind == "" {
		p.report(n, fmt.Errorf("%w: not a Kubernetes object: no kind", ErrInvalidValue))
		return
	}
	if items := field(n, "items"); items != nil && (kind == "List" || strings.HasSuffix(kind, "List")) {
		p.items(resolve(items), kind, depth)
		return
	}
	path, ok := podSpecPath(kind, p.str(field(n, "apiVersion")))
	if !ok {
		p.l.Kubernetes.Skipped[kind]++
		return
	}
	if p.helmTestHook(n) {
		p.l.Kubernetes.Skipped[kind+" (helm test)"]++
		return
	}
	p.l.Kubernetes.Objects[kind]++
	what := kind
	if name := objectName(n, p.str); name != "" {
		what += " " + name
	}
	spec := n
	for _, key := range path {
		if spec = field(spec, key); spec == nil {
			break
		}
		spec = resolve(spec)
	}
	if spec == nil || spec.Kind != yaml.MappingNode {
		p.report(n, fmt.Errorf("%w: %s: no pod spec at %s", ErrInvalidValue, what, strings.Join(path, ".")))
		return
	}
	p.podSpec(spec, what)
}

// items walks the items of a List.
func (p *kubeParser) items(items *yaml.Node, kind string, depth int) {
	if isNull(items) {
		return
	}
	if items.Kind != yaml.SequenceNode {
		p.report(items, fmt.Errorf("%w: %s: items: want a list", ErrInvalidValue, kind))
		return
	}
	if depth >= maxListDepth {
		p.report(items, fmt.Errorf("%w: Lists nested deeper than %d", ErrInvalidValue, maxListDepth))
		return
	}
	for _, it := range items.Content {
		p.object(resolve(it), kind, depth+1)
	}
}

// isContainerField reports whether a pod spec key holds containers.
func isContainerField(key string) bool {
	return key == "containers" || key == "initContainers" || key == "ephemeralContainers"
}

// podSpec collects the images of every container of a pod spec, in
// document order.
func (p *kubeParser) podSpec(spec *yaml.Node, what string) {
	found := false
	for i := 0; i+1 < len(spec.Content); i += 2 {
		key, list := spec.Content[i], resolve(spec.Content[i+1])
		if key.Kind != yaml.ScalarNode || !isContainerField(key.Value) || isNull(list) {
			continue
		}
		found = true
		if list.Kind != yaml.SequenceNode {
			p.report(list, fmt.Errorf("%w: %s: %s: want a list", ErrInvalidValue, what, key.Value))
			continue
		}
		for j, c := range list.Content {
			if !p.spend() {
				return
			}
			p.container(resolve(c), fmt.Sprintf("%s: %s[%d]", what, key.Value, j))
		}
	}
	if !found {
		p.report(spec, fmt.Errorf("%w: %s: no containers", ErrInvalidValue, what))
	}
}

// container records the image of one container.
func (p *kubeParser) container(c *yaml.Node, what string) {
	if c.Kind != yaml.MappingNode {
		p.report(c, fmt.Errorf("%w: %s: want a container (a mapping)", ErrInvalidValue, what))
		return
	}
	if name := p.str(field(c, "name")); name != "" {
		what += fmt.Sprintf(" %q", name)
	}
	img := field(c, "image")
	if img == nil || isNull(resolve(img)) {
		p.report(c, fmt.Errorf("%s: no image: %w", what, ErrInvalidReference))
		return
	}
	img = resolve(img)
	if img.Kind != yaml.ScalarNode {
		p.report(img, fmt.Errorf("%w: %s: image: want a string", ErrInvalidValue, what))
		return
	}
	// The same image is named by many objects (sidecars, a List
	// repeating one Deployment): parse it once. Each bad occurrence is
	// still reported at its line.
	if err, done := p.parsed[img.Value]; done {
		if err != nil {
			p.report(img, fmt.Errorf("%s: %w", what, err))
		}
		return
	}
	ref, err := parseRef(img.Value)
	p.parsed[img.Value] = err
	if err != nil {
		p.report(img, fmt.Errorf("%s: %w", what, err))
		return
	}
	ref.Source = p.at(img)
	p.l.addRef(ref)
}

// spend takes one node from the budget; once it is exhausted the parse
// stops with one problem.
func (p *kubeParser) spend() bool {
	p.budget--
	if p.budget == -1 {
		p.l.problem(Source{File: p.file}, fmt.Errorf("%w: more than %d objects and containers", ErrInputTooLarge, maxKubeNodes))
	}
	return p.budget >= 0
}

// helmTestHook reports whether object n is a Helm test ("helm.sh/hook:
// test"): "helm template" renders it, but only "helm test" runs it, never
// a rollout. Other hooks (pre-upgrade...) do run and are kept.
func (p *kubeParser) helmTestHook(n *yaml.Node) bool {
	meta := field(n, "metadata")
	if meta == nil {
		return false
	}
	ann := field(resolve(meta), "annotations")
	if ann == nil {
		return false
	}
	hooks := p.str(field(resolve(ann), "helm.sh/hook"))
	if hooks == "" {
		return false
	}
	for _, h := range strings.Split(hooks, ",") {
		switch strings.TrimSpace(h) {
		case "test", "test-success", "test-failure":
		default:
			return false
		}
	}
	return true
}

// str returns the value of a scalar node, "" for anything else.
func (p *kubeParser) str(n *yaml.Node) string {
	if n == nil {
		return ""
	}
	n = resolve(n)
	if n.Kind != yaml.ScalarNode || n.Tag == "!!null" {
		return ""
	}
	return n.Value
}

// field returns the value of key in mapping n, or nil. A duplicated key
// counts once, as Kubernetes' own (JSON) decoding keeps the last value.
func field(n *yaml.Node, key string) *yaml.Node {
	if n == nil || n.Kind != yaml.MappingNode {
		return nil
	}
	var v *yaml.Node
	for i := 0; i+1 < len(n.Content); i += 2 {
		if k := n.Content[i]; k.Kind == yaml.ScalarNode && k.Value == key {
			v = n.Content[i+1]
		}
	}
	return v
}

// objectName returns "namespace/name", "name", or "" for an object
// without metadata.
func objectName(n *yaml.Node, str func(*yaml.Node) string) string {
	meta := field(n, "metadata")
	if meta != nil {
		meta = resolve(meta)
	}
	name, ns := str(field(meta, "name")), str(field(meta, "namespace"))
	if ns != "" && name != "" {
		return ns + "/" + name
	}
	return name
}

// podSpecPath returns where the pod spec of a workload kind lives, and
// false for kinds that run no pods (or are not the built-in ones:
// a custom resource may reuse a kind name such as Job).
func podSpecPath(kind, apiVersion string) ([]string, bool) {
	group, _, hasGroup := strings.Cut(apiVersion, "/")
	if !hasGroup {
		group = "" // "v1": the core group
	}
	switch group {
	case "", "apps", "batch", "extensions":
	default:
		return nil, false
	}
	switch kind {
	case "Pod":
		return []string{"spec"}, true
	case "PodTemplate":
		return []string{"template", "spec"}, true
	case "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "ReplicationController", "Job":
		return []string{"spec", "template", "spec"}, true
	case "CronJob":
		return []string{"spec", "jobTemplate", "spec", "template", "spec"}, true
	}
	return nil, false
}

// looksKubernetes reports whether data holds Kubernetes objects: its first
// document that decodes to something is a mapping with a kind or
// apiVersion key. An image list never has such keys: skopeo-sync's
// top-level keys are registry hosts, and a text list is not a mapping.
func looksKubernetes(data []byte) bool {
	tried := 0
	for d := range documents(data) {
		if blankDocument(d.text) {
			continue
		}
		if tried++; tried > 100 {
			return false
		}
		var doc yaml.Node
		if yaml.Unmarshal(d.text, &doc) != nil {
			continue
		}
		root := &doc
		if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
			root = root.Content[0]
		}
		if isNull(root) {
			continue
		}
		return root.Kind == yaml.MappingNode && (field(root, "kind") != nil || field(root, "apiVersion") != nil)
	}
	return false
}
