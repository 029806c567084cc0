package imagelist

import (
	"strings"
	"testing"
)

func TestParseSkopeoSync(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		in         string
		refs       []string
		rules      []string
		registries map[string]RegistryOptions
		problems   []wantProblem
	}{
		{name: "empty file"},
		{name: "only a comment", in: "# nothing\n"},
		{
			name: "images, all tags, regex and semver",
			in: `reg.example.com:5000:
  images:
    busybox: []
    redis:
      - "1.0"
      - 2.0
      - ` + dgst + `
    team/app:
  images-by-tag-regex:
    nginx: ^1\.13\.[12]-alpine-perl$
  images-by-semver:
    alpine: ">= 3.12, < 4"
`,
			refs: []string{
				"5 reg.example.com:5000/redis:1.0",
				"6 reg.example.com:5000/redis:2.0",
				"7 reg.example.com:5000/redis@" + dgst,
			},
			rules: []string{
				"3 reg.example.com:5000/busybox all tags",
				"8 reg.example.com:5000/team/app all tags",
				`10 reg.example.com:5000/nginx tags ~ ^1\.13\.[12]-alpine-perl$`,
				"12 reg.example.com:5000/alpine tags in >=3.12 <4",
			},
			registries: map[string]RegistryOptions{"reg.example.com:5000": {}},
		},
		{
			name: "docker hub normalisation",
			in: `index.docker.io:
  images:
    busybox: ["1"]
    bitnami/redis: ["7"]
  images-by-semver:
    nginx: "~1.25"
`,
			refs:       []string{"3 docker.io/library/busybox:1", "4 docker.io/bitnami/redis:7"},
			rules:      []string{"6 docker.io/library/nginx tags in ~1.25"},
			registries: map[string]RegistryOptions{"docker.io": {}},
		},
		{
			name: "registry options",
			in: `a.example.com:
  credentials:
    username: john
    password: hunter2
  tls-verify: false
  cert-dir: /certs
b.example.com:
  tls-verify: true
`,
			registries: map[string]RegistryOptions{
				"a.example.com": {Username: "john", Password: "hunter2", Insecure: true, CertDir: "/certs"},
				"b.example.com": {},
			},
		},
		{
			name: "bad digest is reported and the rest kept",
			in: `r.example.com:
  images:
    redis:
      - "1.0"
      - "sha256:111111"
      - "2.0"
`,
			refs:       []string{"4 r.example.com/redis:1.0", "6 r.example.com/redis:2.0"},
			registries: map[string]RegistryOptions{"r.example.com": {}},
			problems: []wantProblem{
				{at: "s.yaml:5", msg: `digest "sha256:111111": invalid checksum digest length`, is: ErrInvalidReference},
			},
		},
		{
			name: "unknown keys",
			in: `r.example.com:
  imagez: {}
  credentials:
    user: john
  images:
    x: ["1"]
`,
			refs:       []string{"6 r.example.com/x:1"},
			registries: map[string]RegistryOptions{"r.example.com": {}},
			problems: []wantProblem{
				{at: "s.yaml:2", msg: `unknown key "imagez" in r.example.com`, is: ErrUnknownKey},
				{at: "s.yaml:4", msg: `unknown key "user" in credentials`, is: ErrUnknownKey},
			},
		},
		{
			name: "bad regex and semver",
			in: `r.example.com:
  images-by-tag-regex:
    a: "(["
    b: ^v
  images-by-semver:
    c: ">>> x"
    d: [1]
`,
			rules:      []string{"4 r.example.com/b tags ~ ^v"},
			registries: map[string]RegistryOptions{"r.example.com": {}},
			problems: []wantProblem{
				{at: "s.yaml:3", msg: "images-by-tag-regex: a: error parsing regexp", is: ErrInvalidValue},
				{at: "s.yaml:6", msg: `images-by-semver: c: constraint ">>> x"`, is: ErrInvalidValue},
				{at: "s.yaml:7", msg: "images-by-semver: d: want a string", is: ErrInvalidValue},
			},
		},
		{
			name: "wrong value types",
			in: `r.example.com:
  images:
    a: "1.0"
    b: [[1]]
    Upper: ["1"]
    c:d: ["1"]
  tls-verify: maybe
  cert-dir: [x]
  credentials: john
`,
			registries: map[string]RegistryOptions{"r.example.com": {}},
			problems: []wantProblem{
				{at: "s.yaml:3", msg: "images: a: want a list of tags or digests", is: ErrInvalidValue},
				{at: "s.yaml:4", msg: "images: b: want a string", is: ErrInvalidValue},
				{at: "s.yaml:5", msg: "must be lowercase", is: ErrInvalidReference},
				{at: "s.yaml:6", msg: "want a repository without tag or digest", is: ErrInvalidReference},
				{at: "s.yaml:7", msg: "tls-verify: want true or false", is: ErrInvalidValue},
				{at: "s.yaml:8", msg: "cert-dir: want a string", is: ErrInvalidValue},
				{at: "s.yaml:9", msg: "credentials: want a mapping", is: ErrInvalidValue},
			},
		},
		{
			name:       "keys that are not registry hosts",
			in:         "nginx:\n  images: {a: [\"1\"]}\nfoo/bar:\n  images: {}\nok.example.com: {}\n",
			registries: map[string]RegistryOptions{"ok.example.com": {}},
			problems: []wantProblem{
				{at: "s.yaml:1", msg: `"nginx" is not a registry host`, is: ErrInvalidReference},
				{at: "s.yaml:3", msg: `"foo/bar" is not a registry host`, is: ErrInvalidReference},
			},
		},
		{
			name: "duplicate keys and registries",
			in: `docker.io:
  images: {a: ["1"], a: ["2"]}
index.docker.io:
  images: {b: ["1"]}
`,
			refs:       []string{"2 docker.io/library/a:1", "4 docker.io/library/b:1"},
			registries: map[string]RegistryOptions{"docker.io": {}},
			problems: []wantProblem{
				{at: "s.yaml:2", msg: `key "a" already defined on line 2`, is: ErrInvalidValue},
				{at: "s.yaml:3", msg: "registry docker.io already configured at s.yaml:1", is: ErrInvalidValue},
			},
		},
		{
			name:       "duplicates merged",
			in:         "r.example.com:\n  images:\n    a: [\"1\", \"1\"]\n    docker.io/x: []\n",
			refs:       []string{"3 r.example.com/a:1"},
			rules:      []string{"4 r.example.com/docker.io/x all tags"},
			registries: map[string]RegistryOptions{"r.example.com": {}},
		},
		{
			name: "syntax error",
			in:   "r.example.com:\n  images:\n    a: [\"1\"\n",
			// yaml.v3 reports the line where the flow sequence's trouble
			// began, counted its own way; we keep its number.
			problems: []wantProblem{{at: "s.yaml:2", msg: "syntax error: yaml: line 2", is: ErrSyntax}},
		},
		{
			name:     "syntax error without a line",
			in:       "a: b: c\n",
			problems: []wantProblem{{at: "s.yaml:1", msg: "syntax error: yaml: mapping values", is: ErrSyntax}},
		},
		{
			name:     "top level is not a mapping",
			in:       "- a\n- b\n",
			problems: []wantProblem{{at: "s.yaml:1", msg: "top level: want a mapping", is: ErrInvalidValue}},
		},
		{
			name:       "second document is ignored",
			in:         "r.example.com: {}\n---\nq.example.com: {}\n",
			registries: map[string]RegistryOptions{"r.example.com": {}},
			problems:   []wantProblem{{at: "s.yaml:2", msg: "only one YAML document", is: ErrInvalidValue}},
		},
		{
			name:       "CRLF and byte order mark",
			in:         "\ufeffr.example.com:\r\n  images:\r\n    a: [\"1\"]\r\n",
			refs:       []string{"3 r.example.com/a:1"},
			registries: map[string]RegistryOptions{"r.example.com": {}},
		},
		{
			name:       "aliases",
			in:         "r.example.com:\n  images:\n    a: &tags [\"1\"]\n    b: *tags\n",
			refs:       []string{"3 r.example.com/a:1", "3 r.example.com/b:1"},
			registries: map[string]RegistryOptions{"r.example.com": {}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			l, err := ParseSkopeoSync("s.yaml", strings.NewReader(tt.in))
			if l == nil {
				t.Fatal("nil List")
			}
			checkStrings(t, "refs", refLines(l), tt.refs)
			checkStrings(t, "rules", ruleLines(l), tt.rules)
			checkProblems(t, l, err, tt.problems)
			checkRegistries(t, l, tt.registries)
			if len(l.Sections) != 0 {
				t.Errorf("sections = %q, want none", l.Sections)
			}
		})
	}
}

// checkRegistries compares registry options, ignoring Source.
func checkRegistries(t *testing.T, l *List, want map[string]RegistryOptions) {
	t.Helper()
	if len(l.Registries) != len(want) {
		t.Errorf("registries = %v, want %v", l.Registries, want)
	}
	for host, w := range want {
		got, ok := l.Registries[host]
		got.Source = Source{}
		if !ok || got != w {
			t.Errorf("registry %s = %+v (present %v), want %+v", host, got, ok, w)
		}
	}
}
