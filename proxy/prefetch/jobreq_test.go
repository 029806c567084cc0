package prefetch

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"github.com/stowage/stowage/config/imagelist"
)

// TestRequestRoundTrip: a request kept in the shared job list comes back
// on another replica with the same references, rules, problems and
// registry warnings, and never carries a list's password.
func TestRequestRoundTrip(t *testing.T) {
	const yaml = `docker.io:
  credentials:
    username: john
    password: hunter2-secret
  tls-verify: false
  images:
    busybox: ["1", "1.36"]
    "Bad/Name": ["1"]
  images-by-tag-regex:
    nginx: ^1\.2[0-9]-alpine$
  images-by-semver:
    alpine: ">= 3.12, < 4"
ghcr.io:
  images:
    org/app: [v1]
`
	l, _ := imagelist.Parse("sync.yaml", strings.NewReader(yaml))
	text, _ := imagelist.ParseText("list.txt", strings.NewReader("##base\nalpine:3.20\nnot a ref!\nquay.io/org/x@sha256:"+strings.Repeat("a", 64)+"\n"))
	req := Request{
		Lists:     []NamedList{{Name: "sync.yaml", List: l}, {Name: "list.txt", List: text}},
		Images:    []string{"ghcr.io/org/inline:v2"},
		InlinePin: "api", Platforms: []string{"linux/amd64"},
	}
	b, err := encodeRequest(req)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(b, []byte("hunter2")) {
		t.Fatalf("the encoded request carries the list's password: %s", b)
	}
	got, err := decodeRequest(b)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got.Images, got.InlinePin, got.Platforms, got.NoPins) != fmt.Sprint(req.Images, req.InlinePin, req.Platforms, req.NoPins) {
		t.Fatalf("request fields: %+v", got)
	}
	if len(got.Lists) != 2 {
		t.Fatalf("%d lists", len(got.Lists))
	}
	for i, nl := range req.Lists {
		g := got.Lists[i]
		if g.Name != nl.Name {
			t.Errorf("list %d name %q", i, g.Name)
		}
		if fmt.Sprint(g.List.Refs) != fmt.Sprint(nl.List.Refs) {
			t.Errorf("list %s refs:\n%v\nwant\n%v", nl.Name, g.List.Refs, nl.List.Refs)
		}
		var rules, want []string
		for _, r := range g.List.Rules {
			rules = append(rules, r.Source.String()+" "+r.String())
		}
		for _, r := range nl.List.Rules {
			want = append(want, r.Source.String()+" "+r.String())
		}
		if fmt.Sprint(rules) != fmt.Sprint(want) {
			t.Errorf("list %s rules %v, want %v", nl.Name, rules, want)
		}
		// What the run reports: the list's problems, then the registry
		// options it does not apply.
		var probs, wantProbs []string
		for _, p := range g.List.Problems {
			probs = append(probs, p.Error())
		}
		probs = append(probs, registryWarnings(g.List)...)
		for _, p := range nl.List.Problems {
			wantProbs = append(wantProbs, p.Error())
		}
		wantProbs = append(wantProbs, registryWarnings(nl.List)...)
		if fmt.Sprint(probs) != fmt.Sprint(wantProbs) || len(wantProbs) == 0 {
			t.Errorf("list %s problems:\n%q\nwant\n%q", nl.Name, probs, wantProbs)
		}
	}
	// The rules still select what they selected.
	tags := []string{"1.20-alpine", "1.3-alpine", "3.12.1", "3.20", "4.0", "v3.19"}
	for i, r := range l.Rules {
		if a, b := fmt.Sprint(got.Lists[0].List.Rules[i].Match(tags)), fmt.Sprint(r.Match(tags)); a != b {
			t.Errorf("rule %s matches %s, want %s", r, a, b)
		}
	}
	if _, err := decodeRequest([]byte(`{"lists":[{"name":"x","rules":[{"kind":1,"pattern":"("}]}]}`)); err == nil {
		t.Error("a bad rule pattern decoded")
	}
}
