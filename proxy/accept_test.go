package proxy_test

import (
	"net/http"
	"testing"

	ggcrv1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/stowage/stowage/proxy/internal/testenv"
)

// TestAcceptAgainstDistribution runs the same manifest requests against the
// in-process distribution v3 registry and against Stowage in front of it,
// and checks both against the table in docs/accept.md: Stowage answers with
// the stored type, except an OCI image manifest to a client that lists
// manifest types but neither the OCI manifest type nor a wildcard (404
// MANIFEST_UNKNOWN, as v3); it never rewrites a Docker manifest list into
// its linux/amd64 child.
func TestAcceptAgainstDistribution(t *testing.T) {
	t.Parallel()
	const (
		ociManifest = "application/vnd.oci.image.manifest.v1+json"
		ociIndex    = "application/vnd.oci.image.index.v1+json"
		schema2     = mediaTypeDockerManifest
		list        = "application/vnd.docker.distribution.manifest.list.v2+json"
	)
	e := newEnv(t, envOptions{})
	e.up.Push(t, "library/acc:oci", testenv.OCIImage(t, 1, 256))
	e.up.Push(t, "library/acc:docker", testenv.DockerImage(t, 1, 256))
	idx, _ := testenv.MultiArchIndex(t)
	e.up.PushIndex(t, "library/acc:index", idx)
	child := testenv.DockerImage(t, 1, 256)
	dl := mutate.AppendManifests(mutate.IndexMediaType(empty.Index, types.DockerManifestList), mutate.IndexAddendum{
		Add:        child,
		Descriptor: ggcrv1.Descriptor{MediaType: types.DockerManifestSchema2, Platform: &ggcrv1.Platform{OS: "linux", Architecture: "amd64"}},
	})
	e.up.PushIndex(t, "library/acc:list", dl)

	var (
		none       []string
		all        = []string{ociIndex, ociManifest, list, schema2}
		dockerOnly = []string{list, schema2}
		ociOnly    = []string{ociIndex, ociManifest}
		wildcard   = []string{"*/*"}
	)
	type answer struct {
		status int
		ctype  string // for a 200
		code   string // OCI error code otherwise
	}
	ok := func(ct string) answer { return answer{status: http.StatusOK, ctype: ct} }
	unknown := answer{status: http.StatusNotFound, code: "MANIFEST_UNKNOWN"}
	invalid := answer{status: http.StatusBadRequest, code: "MANIFEST_INVALID"}
	for _, c := range []struct {
		name        string
		ref         string
		accept      []string
		v3, stowage answer
	}{
		{"OCI manifest, full Accept", "oci", all, ok(ociManifest), ok(ociManifest)},
		{"OCI manifest, Docker types only", "oci", dockerOnly, unknown, unknown},
		{"OCI manifest, no Accept", "oci", none, unknown, ok(ociManifest)},
		{"OCI manifest, */*", "oci", wildcard, unknown, ok(ociManifest)},
		{"OCI index, Docker types only", "index", dockerOnly, ok(ociIndex), ok(ociIndex)},
		{"OCI index, no Accept", "index", none, ok(ociIndex), ok(ociIndex)},
		{"Docker list, schema 2 only", "list", []string{schema2}, ok(schema2), ok(list)},
		{"Docker list, no Accept", "list", none, invalid, ok(list)},
		{"Docker list, full Accept", "list", all, ok(list), ok(list)},
		{"Docker schema 2, OCI types only", "docker", ociOnly, ok(schema2), ok(schema2)},
		{"Docker schema 2, no Accept", "docker", none, ok(schema2), ok(schema2)},
	} {
		for _, side := range []struct {
			who  string
			base string
			want answer
		}{{"distribution v3", e.up.URL, c.v3}, {"Stowage", e.srv.URL, c.stowage}} {
			r := fetchManifestFrom(t, side.base, http.MethodGet, "library/acc:"+c.ref, c.accept...)
			got := answer{status: r.status, code: r.code}
			if r.status == http.StatusOK {
				got.ctype = r.ctype
			}
			if got != side.want {
				t.Errorf("%s, %s: got %+v, want %+v", c.name, side.who, got, side.want)
			}
		}
	}
}
