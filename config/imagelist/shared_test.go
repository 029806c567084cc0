package imagelist

import (
	"bufio"
	"fmt"
	"os"
	"strings"
	"testing"
)

// The project's shared test data (shared/data beside the repository: a real
// user's images-list.txt and skopeo-sync's documented example), copied into
// testdata so that the tests run in any clone.
const (
	sharedImagesList = "testdata/shared/images-list.txt"
	sharedSkopeoSync = "testdata/shared/skopeo-sync.yaml"
)

// readShared returns the lines of a shared data file.
func readShared(t *testing.T, path string) []string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	sc := bufio.NewScanner(strings.NewReader(string(data)))
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	return lines
}

// expectedDockerHub normalises a familiar Docker Hub reference by hand.
func expectedDockerHub(s string) string {
	name, tag, ok := strings.Cut(s, ":")
	if !ok {
		tag = "latest"
	}
	if !strings.Contains(name, "/") {
		name = "library/" + name
	}
	return "docker.io/" + name + ":" + tag
}

func TestSharedImagesList(t *testing.T) {
	t.Parallel()
	lines := readShared(t, sharedImagesList)
	var wantRefs, wantSections []string
	wantSection := map[string]string{} // canonical ref -> section
	seen := map[string]bool{}
	section := ""
	for _, line := range lines {
		line = strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(line, "##"):
			section = line[2:]
			wantSections = append(wantSections, section)
		case line == "", strings.HasPrefix(line, "#"):
		case !seen[line]:
			seen[line] = true
			ref := expectedDockerHub(line)
			wantRefs = append(wantRefs, ref)
			wantSection[ref] = section
		}
	}

	l, err := ParseFile(sharedImagesList)
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Refs) != len(wantRefs) {
		t.Errorf("%d refs, want %d", len(l.Refs), len(wantRefs))
	}
	var got []string
	for _, r := range l.Refs {
		got = append(got, r.String())
		if r.Registry != "docker.io" {
			t.Errorf("%s: registry %q, want docker.io", r.Source, r.Registry)
		}
		if r.Section != wantSection[r.String()] {
			t.Errorf("%s: %s in section %q, want %q", r.Source, r, r.Section, wantSection[r.String()])
		}
	}
	checkStrings(t, "refs", got, wantRefs)
	checkStrings(t, "sections", l.Sections, wantSections)
}

func TestSharedSkopeoSync(t *testing.T) {
	t.Parallel()
	lines := readShared(t, sharedSkopeoSync)
	badLine, password := 0, ""
	for i, line := range lines {
		if strings.Contains(line, "sha256:111111") {
			badLine = i + 1
		}
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "password:"); ok {
			password = strings.TrimSpace(v)
		}
	}
	if badLine == 0 || password == "" {
		t.Fatalf("shared file changed: bad digest line %d, password %q", badLine, password)
	}

	l, err := ParseFile(sharedSkopeoSync)
	if err == nil || len(l.Problems) != 1 {
		t.Fatalf("problems = %v, want exactly the short digest", l.Problems)
	}
	p := l.Problems[0]
	wantAt := fmt.Sprintf("%s:%d", sharedSkopeoSync, badLine)
	if p.Source.String() != wantAt || !strings.Contains(p.Error(), "sha256:111111") {
		t.Errorf("problem = %v, want it at %s naming sha256:111111", p, wantAt)
	}

	var refs []string
	for _, r := range l.Refs {
		refs = append(refs, r.String())
	}
	checkStrings(t, "refs", refs, []string{
		"registry.example.com/redis:1.0", "registry.example.com/redis:2.0", "quay.io/coreos/etcd:latest",
	})
	var rules []string
	for _, r := range l.Rules {
		rules = append(rules, r.String())
	}
	checkStrings(t, "rules", rules, []string{
		"registry.example.com/busybox all tags",
		`registry.example.com/nginx tags ~ ^1\.13\.[12]-alpine-perl$`,
	})
	checkRegistries(t, l, map[string]RegistryOptions{
		"registry.example.com": {Username: "john", Password: Secret(password), CertDir: "/home/john/certs"},
		"quay.io":              {Insecure: true},
	})

	for _, verb := range []string{"%v", "%+v", "%#v", "%s"} {
		for _, v := range []any{l, *l, l.Registries, err} {
			if out := fmt.Sprintf(verb, v); strings.Contains(out, password) {
				t.Errorf("Sprintf(%q) shows the password: %s", verb, out)
			}
		}
	}
}
