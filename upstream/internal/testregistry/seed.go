package testregistry

import (
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// SeedImage pushes a random image with the given number of layers of
// layerSize bytes to repo:tag, bypassing the token layer, and returns it.
func (r *Registry) SeedImage(t testing.TB, repo, tag string, layers int, layerSize int64) v1.Image {
	t.Helper()
	img, err := random.Image(layerSize, int64(layers))
	if err != nil {
		t.Fatal(err)
	}
	ref := r.ref(t, repo, tag)
	if err := remote.Write(ref, img, remote.WithContext(t.Context())); err != nil {
		t.Fatalf("testregistry: seeding %s: %v", ref, err)
	}
	return img
}

// SeedIndex pushes a random image index (of n images) to repo:tag.
func (r *Registry) SeedIndex(t testing.TB, repo, tag string, n int) v1.ImageIndex {
	t.Helper()
	idx, err := random.Index(512, 1, int64(n))
	if err != nil {
		t.Fatal(err)
	}
	ref := r.ref(t, repo, tag)
	if err := remote.WriteIndex(ref, idx, remote.WithContext(t.Context())); err != nil {
		t.Fatalf("testregistry: seeding %s: %v", ref, err)
	}
	return idx
}

func (r *Registry) ref(t testing.TB, repo, tag string) name.Reference {
	t.Helper()
	host := strings.TrimPrefix(r.seed.URL, "http://")
	ref, err := name.ParseReference(host+"/"+repo+":"+tag, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	return ref
}
