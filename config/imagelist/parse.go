package imagelist

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"

	"go.yaml.in/yaml/v3"
	"io"
)

// Parse parses r in the format [DetectFormat] finds: Kubernetes objects
// (YAML or JSON) by content, else a skopeo-sync YAML file if name ends in
// .yaml or .yml or the content is a YAML mapping, else a text list.
// Results and errors are as for [ParseKubernetes], [ParseSkopeoSync] and
// [ParseText].
func Parse(name string, r io.Reader) (*List, error) {
	data, err := readAll(r)
	if err != nil {
		l := newList()
		l.problem(Source{File: name}, err)
		return l, l.Err()
	}
	switch DetectFormat(name, data) {
	case FormatKubernetes:
		return ParseKubernetes(name, bytes.NewReader(data))
	case FormatSkopeoSync:
		return ParseSkopeoSync(name, bytes.NewReader(data))
	}
	return ParseText(name, bytes.NewReader(data))
}

// ParseFile opens path and parses it with [Parse], using path as the file
// name in every [Source]. If the file cannot be opened, the List is nil.
// To read standard input ("-f -"), call [Parse] with os.Stdin.
func ParseFile(path string) (*List, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return Parse(path, f)
}

// isYAMLName reports whether name has a YAML extension.
func isYAMLName(name string) bool {
	switch strings.ToLower(filepath.Ext(name)) {
	case ".yaml", ".yml":
		return true
	}
	return false
}

// isYAMLMapping reports whether data's first YAML document is a mapping. A
// text list never is: its lines are plain scalars ("nginx:1.2" has no space
// after the colon) or comments.
func isYAMLMapping(data []byte) bool {
	var doc yaml.Node
	if err := yaml.NewDecoder(bytes.NewReader(data)).Decode(&doc); err != nil {
		return false
	}
	return len(doc.Content) == 1 && doc.Content[0].Kind == yaml.MappingNode
}
