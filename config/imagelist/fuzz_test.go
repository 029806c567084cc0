package imagelist

import (
	"os"
	"strings"
	"testing"
	"unicode/utf16"
)

// fuzzSeeds are inputs for both fuzz targets besides the shared files.
var fuzzSeeds = []string{
	"",
	"# c\n\nnginx\n",
	"busybox\n##one\nalpine:3\n## two \nredis\n",
	"nginx:1.2 # web\nredis\t# cache\nalpine#glued\n",
	"quay.io/x/y:1.0@sha256:" + strings.Repeat("ab", 32) + "\n",
	"localhost:5000/app:1\n[::1]:5000/x:y\nregistry-1.docker.io/busybox\nindex.docker.io/a/b\n",
	"Nginx:1\nnginx:\n:tag\nfoo bar\nalpine@sha256:111111\n",
	"\ufeffnginx:1\r\n##s\r\nredis\r\n",
	"r.example.com:\n  images:\n    a: [\"1\", \"sha256:111111\"]\n    b: []\n  images-by-semver:\n    c: \">= 1\"\n",
	"docker.io:\n  images-by-tag-regex:\n    nginx: ^1\\.\n  credentials: {username: u, password: p}\n  tls-verify: false\n",
	"a: &x [1]\nb: *x\n---\nc: {}\n",
}

// addSeeds adds fuzzSeeds and the shared data files to f's corpus.
func addSeeds(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add(s)
	}
	for _, path := range []string{sharedImagesList, sharedSkopeoSync} {
		if data, err := os.ReadFile(path); err == nil {
			f.Add(string(data))
		}
	}
}

func FuzzParseText(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, in string) {
		l, err := ParseText("f.txt", strings.NewReader(in))
		checkFuzzList(t, l, err, maxLines(in))
	})
}

func FuzzParseSkopeoSync(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, in string) {
		l, err := ParseSkopeoSync("f.yaml", strings.NewReader(in))
		checkFuzzList(t, l, err, yamlMaxLines(in))
		for _, r := range l.Rules {
			if (r.Kind == TagRegex) != (r.TagRegex != nil) || (r.Kind == Semver) != (r.Semver != nil) {
				t.Errorf("rule %v has the wrong selector for its kind", r)
			}
			checkReparse(t, r.Name()+":"+DefaultTag, Ref{Registry: r.Registry, Repository: r.Repository, Tag: DefaultTag})
		}
	})
}

// maxLines bounds the line count of in; YAML also breaks lines at a lone CR.
func maxLines(in string) int {
	return strings.Count(in, "\n") + strings.Count(in, "\r") + 1
}

// yamlMaxLines bounds the line count of in as YAML sees it: a UTF-16 byte
// order mark switches the decoding, and NEL, LS and PS also break lines.
func yamlMaxLines(in string) int {
	text := in
	if b := []byte(in); len(b) >= 2 && (b[0] == 0xfe && b[1] == 0xff || b[0] == 0xff && b[1] == 0xfe) {
		units := make([]uint16, 0, len(b)/2)
		for i := 2; i+1 < len(b); i += 2 {
			if b[0] == 0xfe {
				units = append(units, uint16(b[i])<<8|uint16(b[i+1]))
			} else {
				units = append(units, uint16(b[i+1])<<8|uint16(b[i]))
			}
		}
		text = string(utf16.Decode(units))
	}
	n := 1
	for _, r := range text {
		switch r {
		case '\n', '\r', '\u0085', '\u2028', '\u2029':
			n++
		}
	}
	return n
}

// checkFuzzList checks the invariants every parse result keeps.
func checkFuzzList(t *testing.T, l *List, err error, lines int) {
	t.Helper()
	if l == nil {
		t.Fatal("nil List")
	}
	if (err == nil) != (len(l.Problems) == 0) {
		t.Errorf("err = %v with %d problems", err, len(l.Problems))
	}
	for _, p := range l.Problems {
		if p.Err == nil || p.Source.Line < 0 || p.Source.Line > lines {
			t.Errorf("bad problem %#v (input has %d lines)", p, lines)
		}
	}
	seen := map[string]bool{}
	for _, r := range l.Refs {
		if seen[r.String()] {
			t.Errorf("duplicate ref %s", r)
		}
		seen[r.String()] = true
		if r.Source.Line < 1 || r.Source.Line > lines {
			t.Errorf("ref %s at line %d (input has %d lines)", r, r.Source.Line, lines)
		}
		checkReparse(t, r.String(), r)
	}
}

// checkReparse asserts that s parses as a text list to exactly want.
func checkReparse(t *testing.T, s string, want Ref) {
	t.Helper()
	l, err := ParseText("re", strings.NewReader(s))
	if err != nil || len(l.Refs) != 1 {
		t.Fatalf("%q does not re-parse: %v", s, err)
	}
	got := l.Refs[0]
	if got.Registry != want.Registry || got.Repository != want.Repository || got.Tag != want.Tag || got.Digest != want.Digest || got.String() != s {
		t.Errorf("%q re-parses as %#v, want %#v", s, got, want)
	}
}
