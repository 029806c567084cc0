package imagelist

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseDetectsFormat(t *testing.T) {
	t.Parallel()
	yamlDoc := "r.example.com:\n  images:\n    a: [\"1\"]\n"
	tests := []struct {
		name, file, in string
		wantRefs       []string
		wantProblems   int
	}{
		{name: "yaml by extension", file: "list.yaml", in: yamlDoc, wantRefs: []string{"3 r.example.com/a:1"}},
		{name: "yml by extension, upper case", file: "LIST.YML", in: yamlDoc, wantRefs: []string{"3 r.example.com/a:1"}},
		{name: "yaml mapping by content", file: "list", in: yamlDoc, wantRefs: []string{"3 r.example.com/a:1"}},
		{name: "text", file: "images.txt", in: "##s\nnginx:1\nlocalhost:5000/a:b\n", wantRefs: []string{"2 [s] docker.io/library/nginx:1", "3 [s] localhost:5000/a:b"}},
		{name: "text with IPv6 host", file: "list", in: "[::1]:5000/x:y\n", wantRefs: []string{"1 [::1]:5000/x:y"}},
		{name: "text that is a yaml scalar", file: "list", in: "nginx\nredis:7\n", wantRefs: []string{"1 docker.io/library/nginx:latest", "2 docker.io/library/redis:7"}},
		{name: "yaml extension forces yaml", file: "l.yaml", in: "nginx\n", wantProblems: 1},
		{name: "empty", file: "list"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			l, err := Parse(tt.file, strings.NewReader(tt.in))
			checkStrings(t, "refs", refLines(l), tt.wantRefs)
			if len(l.Problems) != tt.wantProblems || (err != nil) != (tt.wantProblems > 0) {
				t.Errorf("problems = %v, err = %v, want %d", l.Problems, err, tt.wantProblems)
			}
		})
	}
}

func TestParseFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "images.txt")
	if err := os.WriteFile(path, []byte("nginx\nBAD\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	l, err := ParseFile(path)
	if !errors.Is(err, ErrInvalidReference) || len(l.Refs) != 1 {
		t.Fatalf("ParseFile = %v, %v", l, err)
	}
	if got, want := l.Problems[0].Source.String(), path+":2"; got != want {
		t.Errorf("problem at %s, want %s", got, want)
	}
	if l, err := ParseFile(filepath.Join(dir, "missing")); l != nil || !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing file: %v, %v", l, err)
	}
}

func TestParseInputTooLarge(t *testing.T) {
	t.Parallel()
	big := strings.Repeat("# a comment line\n", MaxInputSize/16+1)
	parsers := map[string]func(string, *strings.Reader) (*List, error){
		"Parse":           func(n string, r *strings.Reader) (*List, error) { return Parse(n, r) },
		"ParseText":       func(n string, r *strings.Reader) (*List, error) { return ParseText(n, r) },
		"ParseSkopeoSync": func(n string, r *strings.Reader) (*List, error) { return ParseSkopeoSync(n, r) },
	}
	for name, parse := range parsers {
		l, err := parse("big", strings.NewReader(big))
		if !errors.Is(err, ErrInputTooLarge) || len(l.Problems) != 1 {
			t.Errorf("%s: err = %v, problems = %d", name, err, len(l.Problems))
		}
	}
}

func TestProblemCap(t *testing.T) {
	t.Parallel()
	l, err := ParseText("t", strings.NewReader(strings.Repeat("BAD\n", 2*maxProblems)))
	if len(l.Problems) != maxProblems || !errors.Is(err, ErrInvalidReference) {
		t.Fatalf("problems = %d, err is %v", len(l.Problems), err)
	}
	if last := l.Problems[maxProblems-1].Error(); !strings.Contains(last, "further problems not reported") {
		t.Errorf("last problem = %q", last)
	}
}
