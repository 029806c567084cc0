package imagelist

import (
	"errors"
	"fmt"
)

// List is the parsed content of one image list.
type List struct {
	// Refs are the concrete references in input order. The same canonical
	// reference appears once, with the Source (and Section) of its first
	// occurrence.
	Refs []Ref
	// Rules are the requests that need an upstream tag listing to expand.
	Rules []Rule
	// Registries holds per-registry options by normalised registry host.
	Registries map[string]RegistryOptions
	// Sections are the "##section" headers of a text list, in input order,
	// each once.
	Sections []string
	// Problems are the bad entries, in input order. They did not stop the
	// parse.
	Problems []Problem
	// Format is the form the input was parsed as.
	Format Format
	// Kubernetes counts the objects of Kubernetes input; nil for the
	// other formats.
	Kubernetes *KubeStats

	seen     map[string]bool // canonical references already in Refs
	sections map[string]bool // names already in Sections
}

// newList returns an empty List.
func newList() *List {
	return &List{Registries: map[string]RegistryOptions{}, seen: map[string]bool{},
		sections: map[string]bool{}}
}

// Err returns the problems joined into one error, or nil if there are none.
func (l *List) Err() error {
	if l == nil || len(l.Problems) == 0 {
		return nil
	}
	errs := make([]error, len(l.Problems))
	for i, p := range l.Problems {
		errs[i] = p
	}
	return errors.Join(errs...)
}

// InSection returns the references that were under the "##name" header
// ("" for those before any header).
func (l *List) InSection(name string) []Ref {
	var out []Ref
	for _, r := range l.Refs {
		if r.Section == name {
			out = append(out, r)
		}
	}
	return out
}

// addRef appends ref unless its canonical form is already present.
func (l *List) addRef(ref Ref) {
	key := ref.String()
	if l.seen[key] {
		return
	}
	l.seen[key] = true
	l.Refs = append(l.Refs, ref)
}

// addSection records a section header once.
func (l *List) addSection(name string) {
	if l.sections[name] {
		return
	}
	l.sections[name] = true
	l.Sections = append(l.Sections, name)
}

// problem records a problem at src unless the cap is reached; the last
// slot says that further problems were dropped.
func (l *List) problem(src Source, err error) {
	switch n := len(l.Problems); {
	case n < maxProblems-1:
		l.Problems = append(l.Problems, Problem{Source: src, Err: err})
	case n == maxProblems-1:
		more := fmt.Errorf("%w (further problems not reported)", err)
		l.Problems = append(l.Problems, Problem{Source: src, Err: more})
	}
}
