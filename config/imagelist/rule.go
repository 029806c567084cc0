package imagelist

import (
	"regexp"
	"slices"

	"github.com/Masterminds/semver/v3"
)

// RuleKind says how a [Rule] selects tags.
type RuleKind int

// The kinds of [Rule].
const (
	// AllTags selects every tag (skopeo-sync's empty tag list).
	AllTags RuleKind = iota
	// TagRegex selects tags matching Rule.TagRegex
	// (skopeo-sync's images-by-tag-regex).
	TagRegex
	// Semver selects tags that are versions satisfying Rule.Semver
	// (skopeo-sync's images-by-semver).
	Semver
)

// String returns the skopeo-sync name of the kind.
func (k RuleKind) String() string {
	switch k {
	case AllTags:
		return "all-tags"
	case TagRegex:
		return "images-by-tag-regex"
	case Semver:
		return "images-by-semver"
	}
	return "unknown"
}

// Rule is a request for one repository that needs the upstream tag list to
// expand into concrete references; see [Rule.Match].
type Rule struct {
	// Registry is the normalised registry host.
	Registry string
	// Repository is the path inside the registry, e.g. "library/nginx".
	Repository string
	// Kind says which of the selectors below applies.
	Kind RuleKind
	// TagRegex is set for Kind TagRegex. As in skopeo, it is not anchored:
	// write ^...$ to match whole tags.
	TagRegex *regexp.Regexp
	// Semver is set for Kind Semver.
	Semver *semver.Constraints
	// Source is where the rule was written.
	Source Source
}

// Name returns "registry/repository".
func (r Rule) Name() string {
	return r.Registry + "/" + r.Repository
}

// String describes the rule, e.g. "docker.io/library/nginx tags ~ ^1\.".
func (r Rule) String() string {
	switch {
	case r.Kind == TagRegex && r.TagRegex != nil:
		return r.Name() + " tags ~ " + r.TagRegex.String()
	case r.Kind == Semver && r.Semver != nil:
		return r.Name() + " tags in " + r.Semver.String()
	}
	return r.Name() + " all tags"
}

// Match returns the tags the rule selects from tags, sorted and without
// duplicates. Strings that are not valid tags are never selected. A
// semver rule selects tags that parse as versions (a leading "v" and
// missing minor or patch parts are allowed) and satisfy the constraint.
func (r Rule) Match(tags []string) []string {
	out := []string{}
	for _, t := range tags {
		if validTag(t) && r.selects(t) {
			out = append(out, t)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// selects reports whether the rule selects the valid tag t.
func (r Rule) selects(t string) bool {
	switch r.Kind {
	case AllTags:
		return true
	case TagRegex:
		return r.TagRegex != nil && r.TagRegex.MatchString(t)
	case Semver:
		if r.Semver == nil {
			return false
		}
		v, err := semver.NewVersion(t)
		return err == nil && r.Semver.Check(v)
	}
	return false
}

// validTag reports whether t follows the tag grammar [\w][\w.-]{0,127}.
func validTag(t string) bool {
	if len(t) == 0 || len(t) > 128 || t[0] == '.' || t[0] == '-' {
		return false
	}
	for i := 0; i < len(t); i++ {
		c := t[i]
		word := c == '_' || ('0' <= c && c <= '9') || ('a' <= c && c <= 'z') || ('A' <= c && c <= 'Z')
		if !word && c != '.' && c != '-' {
			return false
		}
	}
	return true
}
