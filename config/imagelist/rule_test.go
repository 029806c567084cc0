package imagelist

import (
	"regexp"
	"testing"

	"github.com/Masterminds/semver/v3"
)

func TestRuleMatch(t *testing.T) {
	t.Parallel()
	tags := []string{"latest", "1.13.1-alpine-perl", "1.13.2-alpine-perl", "1.13.3-alpine-perl",
		"v1.2.3", "1.2", "2.0.0", "2.0.0-rc.1", "1.13.1-alpine-perl", "bad tag", "", "-x", "a:b"}
	tests := []struct {
		name string
		rule Rule
		want []string
	}{
		{
			name: "all tags sorted, deduplicated, invalid dropped",
			rule: Rule{Kind: AllTags},
			want: []string{"1.13.1-alpine-perl", "1.13.2-alpine-perl", "1.13.3-alpine-perl", "1.2", "2.0.0", "2.0.0-rc.1", "latest", "v1.2.3"},
		},
		{
			name: "anchored regex",
			rule: Rule{Kind: TagRegex, TagRegex: regexp.MustCompile(`^1\.13\.[12]-alpine-perl$`)},
			want: []string{"1.13.1-alpine-perl", "1.13.2-alpine-perl"},
		},
		{
			name: "regex is not anchored, as in skopeo",
			rule: Rule{Kind: TagRegex, TagRegex: regexp.MustCompile(`alpine`)},
			want: []string{"1.13.1-alpine-perl", "1.13.2-alpine-perl", "1.13.3-alpine-perl"},
		},
		{
			// "1.13.1-alpine-perl" reads as a pre-release of 1.13.1.
			name: "semver skips pre-releases and non-versions",
			rule: Rule{Kind: Semver, Semver: mustConstraint(t, ">= 1.2")},
			want: []string{"1.2", "2.0.0", "v1.2.3"},
		},
		{
			name: "semver range",
			rule: Rule{Kind: Semver, Semver: mustConstraint(t, "~1.2")},
			want: []string{"1.2", "v1.2.3"},
		},
		{name: "regex kind without regex", rule: Rule{Kind: TagRegex}, want: []string{}},
		{name: "semver kind without constraint", rule: Rule{Kind: Semver}, want: []string{}},
		{name: "unknown kind", rule: Rule{Kind: RuleKind(42)}, want: []string{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := tt.rule.Match(tags)
			checkStrings(t, "Match", got, tt.want)
			if got == nil {
				t.Error("Match returned nil, want an empty slice")
			}
		})
	}
}

func TestRuleKindString(t *testing.T) {
	t.Parallel()
	tests := []struct {
		kind RuleKind
		want string
	}{
		{AllTags, "all-tags"},
		{TagRegex, "images-by-tag-regex"},
		{Semver, "images-by-semver"},
		{RuleKind(9), "unknown"},
	}
	for _, tt := range tests {
		if got := tt.kind.String(); got != tt.want {
			t.Errorf("%d.String() = %q, want %q", int(tt.kind), got, tt.want)
		}
	}
}

// mustConstraint parses a semver constraint or fails the test.
func mustConstraint(t *testing.T, s string) *semver.Constraints {
	t.Helper()
	c, err := semver.NewConstraint(s)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
