package imagelist

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// ParseSkopeoSync parses the YAML source file of "skopeo sync --src yaml":
//
//	registry.example.com:
//	  images:
//	    busybox: []            # every tag: a Rule of kind AllTags
//	    redis: ["1.0", "sha256:..."]
//	  images-by-tag-regex:
//	    nginx: ^1\.13\.[12]-alpine-perl$
//	  images-by-semver:
//	    alpine: ">= 3.12"
//	  credentials: {username: john, password: secret}
//	  tls-verify: true
//	  cert-dir: /home/john/certs
//
// Top-level keys are registry hosts; "images" entries become [Ref] values,
// empty lists and the by-regex and by-semver maps become [Rule] values, and
// the remaining keys become the registry's [RegistryOptions].
//
// Like [ParseText], it always returns a non-nil List; every bad entry,
// unknown key, bad regular expression or semver constraint is recorded in
// List.Problems with its line, the rest is kept, and the error is
// [List.Err].
func ParseSkopeoSync(name string, r io.Reader) (*List, error) {
	l := newList()
	l.Format = FormatSkopeoSync
	data, err := readAll(r)
	if err != nil {
		l.problem(Source{File: name}, err)
		return l, l.Err()
	}
	p := syncParser{l: l, file: name}
	p.document(data)
	return l, l.Err()
}

// readAll reads r up to MaxInputSize bytes.
func readAll(r io.Reader) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(r, MaxInputSize+1))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrRead, err)
	}
	if len(data) > MaxInputSize {
		return nil, fmt.Errorf("%w: more than %d bytes", ErrInputTooLarge, MaxInputSize)
	}
	return data, nil
}

// syncParser walks one skopeo-sync document, recording into l.
type syncParser struct {
	l    *List
	file string
}

// at returns the Source of node n.
func (p syncParser) at(n *yaml.Node) Source {
	return Source{File: p.file, Line: n.Line}
}

// report records a problem at node n.
func (p syncParser) report(n *yaml.Node, format string, args ...any) {
	p.l.problem(p.at(n), fmt.Errorf(format, args...))
}

// document decodes data and walks the registries of its first document.
func (p syncParser) document(data []byte) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if !errors.Is(err, io.EOF) {
			p.l.problem(p.syntaxSource(err), fmt.Errorf("%w: %w", ErrSyntax, err))
		}
		return
	}
	var next yaml.Node
	if err := dec.Decode(&next); !errors.Is(err, io.EOF) {
		p.report(&next, "%w: only one YAML document is supported, the rest is ignored", ErrInvalidValue)
	}
	root := &doc
	if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
		root = root.Content[0]
	}
	if isNull(root) {
		return
	}
	p.mapping(root, "top level", p.registry)
}

// syntaxSource extracts the line from a yaml.v3 "yaml: line N: ..." error.
// yaml.v3 leaves the line out when it would be 0, which happens for
// problems on the first line; its numbers can be one line early.
func (p syncParser) syntaxSource(err error) Source {
	return Source{File: p.file, Line: yamlErrorLine(err)}
}

// yamlErrorText returns a yaml.v3 error's message without its "yaml:" and
// "line N:" prefixes (the line is reported in the Source).
func yamlErrorText(err error) string {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	if rest, ok := strings.CutPrefix(msg, "line "); ok {
		if _, after, ok := strings.Cut(rest, ": "); ok {
			return after
		}
	}
	return msg
}

// yamlErrorLine extracts the line from a yaml.v3 "yaml: line N: ..."
// error, 1 when it names none.
func yamlErrorLine(err error) int {
	rest, ok := strings.CutPrefix(err.Error(), "yaml: line ")
	if !ok {
		return 1
	}
	n, _, _ := strings.Cut(rest, ":")
	line, err := strconv.Atoi(n)
	if err != nil || line < 1 {
		return 1
	}
	return line
}

// mapping calls fn for each key/value pair of node n, which must be a
// mapping (or null). Keys must be unique strings; what names the mapping in
// messages.
func (p syncParser) mapping(n *yaml.Node, what string, fn func(key, val *yaml.Node)) {
	n = resolve(n)
	if isNull(n) {
		return
	}
	if n.Kind != yaml.MappingNode {
		p.report(n, "%w: %s: want a mapping", ErrInvalidValue, what)
		return
	}
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		key, val := resolve(n.Content[i]), resolve(n.Content[i+1])
		if key.Kind != yaml.ScalarNode {
			p.report(key, "%w: %s: keys must be strings", ErrInvalidValue, what)
			continue
		}
		if first, dup := seen[key.Value]; dup {
			p.report(key, "%w: %s: key %q already defined on line %d", ErrInvalidValue, what, key.Value, first)
			continue
		}
		seen[key.Value] = key.Line
		fn(key, val)
	}
}

// resolve follows an alias to its anchored node.
func resolve(n *yaml.Node) *yaml.Node {
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		return n.Alias
	}
	return n
}

// isNull reports whether n is empty or an explicit null.
func isNull(n *yaml.Node) bool {
	return n.Kind == 0 || (n.Kind == yaml.ScalarNode && n.Tag == "!!null")
}

// scalar returns the value of a scalar node, or reports that what must be
// a string. Values are never quoted in the message: what may be a password.
func (p syncParser) scalar(n *yaml.Node, what string) (string, bool) {
	if n.Kind != yaml.ScalarNode {
		p.report(n, "%w: %s: want a string", ErrInvalidValue, what)
		return "", false
	}
	if n.Tag == "!!null" {
		return "", true
	}
	return n.Value, true
}
