package imagelist

import (
	"errors"
	"strings"
	"testing"
	"testing/iotest"
)

func TestParseText(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		in       string
		refs     []string
		sections []string
		problems []wantProblem
	}{
		{name: "empty file"},
		{name: "only comments and blanks", in: "# a comment\n\n   \n\t# indented comment\n"},
		{
			name: "comments and blanks",
			in:   "# c\n\n  \nnginx\n",
			refs: []string{"4 docker.io/library/nginx:latest"},
		},
		{
			name:     "sections",
			in:       "busybox\n##one\nalpine:3\n## two \nredis\n##one\nfoo/bar:1\n##\nlast\n",
			sections: []string{"one", "two"},
			refs: []string{
				"1 docker.io/library/busybox:latest",
				"3 [one] docker.io/library/alpine:3",
				"5 [two] docker.io/library/redis:latest",
				"7 [one] docker.io/foo/bar:1",
				"9 docker.io/library/last:latest",
			},
		},
		{
			name: "trailing comments",
			in:   "nginx:1.2 # web server\nredis\t# cache\nalpine#glued\n",
			refs: []string{"1 docker.io/library/nginx:1.2", "2 docker.io/library/redis:latest"},
			problems: []wantProblem{
				{at: "t.txt:3", msg: `"alpine#glued"`, is: ErrInvalidReference},
			},
		},
		{
			name: "digests",
			in:   "alpine@" + dgst + "\nquay.io/x/y:1.0@" + dgst + "\n",
			refs: []string{
				"1 docker.io/library/alpine@" + dgst,
				"2 quay.io/x/y:1.0@" + dgst,
			},
		},
		{
			name: "registry hosts with ports",
			in:   "localhost:5000/app:1\nregistry.example.com:8443/team/app\n[::1]:5000/x:y\nlocalhost/app\n10.0.0.1/a/b/c:d\n",
			refs: []string{
				"1 localhost:5000/app:1",
				"2 registry.example.com:8443/team/app:latest",
				"3 [::1]:5000/x:y",
				"4 localhost/app:latest",
				"5 10.0.0.1/a/b/c:d",
			},
		},
		{
			name: "docker hub normalisation",
			in:   "docker.io/nginx\nindex.docker.io/library/redis:1\nregistry-1.docker.io/bitnami/redis:7\nlibrary/alpine:2\nregistry-1.docker.io/busybox@" + dgst + "\n",
			refs: []string{
				"1 docker.io/library/nginx:latest",
				"2 docker.io/library/redis:1",
				"3 docker.io/bitnami/redis:7",
				"4 docker.io/library/alpine:2",
				"5 docker.io/library/busybox@" + dgst,
			},
		},
		{
			name:     "duplicates merged keeping first source",
			in:       "##a\nnginx\n##b\ndocker.io/library/nginx:latest\nnginx:latest\nnginx:1\nalpine@" + dgst + "\nalpine:latest@" + dgst + "\n",
			sections: []string{"a", "b"},
			refs: []string{
				"2 [a] docker.io/library/nginx:latest",
				"6 [b] docker.io/library/nginx:1",
				"7 [b] docker.io/library/alpine@" + dgst,
				"8 [b] docker.io/library/alpine:latest@" + dgst,
			},
		},
		{
			name: "malformed lines keep going",
			in:   "Nginx:1\nnginx:\nredis\n:tag\nfoo bar\nalpine@sha256:111111\nUPPER.example.com/ok:1\nx/y:-bad\n",
			refs: []string{"3 docker.io/library/redis:latest", "7 UPPER.example.com/ok:1"},
			problems: []wantProblem{
				{at: "t.txt:1", msg: "must be lowercase", is: ErrInvalidReference},
				{at: "t.txt:2", msg: `"nginx:"`, is: ErrInvalidReference},
				{at: "t.txt:4", msg: `":tag"`, is: ErrInvalidReference},
				{at: "t.txt:5", msg: `"foo bar"`, is: ErrInvalidReference},
				{at: "t.txt:6", msg: "sha256:111111", is: ErrInvalidReference},
				{at: "t.txt:8", msg: `"x/y:-bad"`, is: ErrInvalidReference},
			},
		},
		{
			name:     "CRLF line endings",
			in:       "nginx:1\r\n# c\r\n##s\r\nredis # r\r\n\r\n",
			sections: []string{"s"},
			refs:     []string{"1 docker.io/library/nginx:1", "4 [s] docker.io/library/redis:latest"},
		},
		{
			name: "byte order mark",
			in:   "\ufeffnginx\n",
			refs: []string{"1 docker.io/library/nginx:latest"},
		},
		{
			name: "no final newline and surrounding whitespace",
			in:   "  nginx:1  \n\t redis",
			refs: []string{"1 docker.io/library/nginx:1", "2 docker.io/library/redis:latest"},
		},
		{
			name: "overlong line",
			in:   "a:" + strings.Repeat("1", MaxLineLength+10) + "\nnginx\n" + strings.Repeat("#", 3*MaxLineLength),
			refs: []string{"2 docker.io/library/nginx:latest"},
			problems: []wantProblem{
				{at: "t.txt:1", msg: "line too long", is: ErrLineTooLong},
				{at: "t.txt:3", msg: "line too long", is: ErrLineTooLong},
			},
		},
		{
			name: "line of exactly the maximum length",
			in:   "a:" + strings.Repeat("1", MaxLineLength-2) + "\r\n",
			problems: []wantProblem{
				{at: "t.txt:1", msg: "invalid image reference", is: ErrInvalidReference},
			},
		},
		{
			name: "host-looking names without a dot are Docker Hub namespaces",
			in:   "myhost/app:1\n",
			refs: []string{"1 docker.io/myhost/app:1"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			l, err := ParseText("t.txt", strings.NewReader(tt.in))
			if l == nil {
				t.Fatal("nil List")
			}
			checkStrings(t, "refs", refLines(l), tt.refs)
			checkStrings(t, "sections", l.Sections, tt.sections)
			checkProblems(t, l, err, tt.problems)
			if len(l.Rules) != 0 || len(l.Registries) != 0 {
				t.Errorf("text list has rules %v or registries %v", l.Rules, l.Registries)
			}
		})
	}
}

func TestParseTextReadError(t *testing.T) {
	t.Parallel()
	r := iotest.TimeoutReader(strings.NewReader("nginx\nredis\n")) // second read fails
	l, err := ParseText("t.txt", r)
	if err == nil || !errors.Is(err, ErrRead) {
		t.Fatalf("err = %v, want ErrRead", err)
	}
	if len(l.Refs) != 2 {
		t.Errorf("refs = %v, want the two read before the failure", l.Refs)
	}
}

func TestInSection(t *testing.T) {
	t.Parallel()
	l, err := ParseText("t.txt", strings.NewReader("a\n##s\nb\nc\n##t\nd\n"))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		section string
		want    []string
	}{
		{"", []string{"docker.io/library/a:latest"}},
		{"s", []string{"docker.io/library/b:latest", "docker.io/library/c:latest"}},
		{"t", []string{"docker.io/library/d:latest"}},
		{"none", nil},
	}
	for _, tt := range tests {
		var got []string
		for _, r := range l.InSection(tt.section) {
			got = append(got, r.String())
		}
		checkStrings(t, "section "+tt.section, got, tt.want)
	}
}
