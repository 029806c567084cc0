package imagelist

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
)

// dgst is a well-formed sha256 digest for tests.
var dgst = "sha256:" + strings.Repeat("ab", 32)

// wantProblem is an expected Problem: its "file:line", a substring of its
// message and, optionally, the sentinel it wraps.
type wantProblem struct {
	at  string
	msg string
	is  error
}

// refLines summarises refs as "line [section] canonical".
func refLines(l *List) []string {
	var out []string
	for _, r := range l.Refs {
		s := fmt.Sprintf("%d %s", r.Source.Line, r)
		if r.Section != "" {
			s = fmt.Sprintf("%d [%s] %s", r.Source.Line, r.Section, r)
		}
		out = append(out, s)
	}
	return out
}

// ruleLines summarises rules as "line description".
func ruleLines(l *List) []string {
	var out []string
	for _, r := range l.Rules {
		out = append(out, fmt.Sprintf("%d %s", r.Source.Line, r))
	}
	return out
}

// checkProblems compares l's problems and error with want.
func checkProblems(t *testing.T, l *List, err error, want []wantProblem) {
	t.Helper()
	if len(l.Problems) != len(want) {
		t.Fatalf("problems = %q, want %d", l.Problems, len(want))
	}
	for i, w := range want {
		p := l.Problems[i]
		if got := p.Source.String(); got != w.at {
			t.Errorf("problem %d at %s, want %s (%v)", i, got, w.at, p)
		}
		if !strings.HasPrefix(p.Error(), w.at+": ") || !strings.Contains(p.Error(), w.msg) {
			t.Errorf("problem %d = %q, want %q... containing %q", i, p.Error(), w.at, w.msg)
		}
		if w.is != nil && !errors.Is(p, w.is) {
			t.Errorf("problem %d = %v, not %v", i, p, w.is)
		}
	}
	if (err == nil) != (len(want) == 0) {
		t.Errorf("err = %v with %d problems", err, len(want))
	}
	if err != nil && err.Error() != l.Err().Error() {
		t.Errorf("err = %v, List.Err() = %v", err, l.Err())
	}
}

// checkStrings compares two string slices, treating nil and empty alike.
func checkStrings(t *testing.T, what string, got, want []string) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Errorf("%s:\n got %q\nwant %q", what, got, want)
	}
}
