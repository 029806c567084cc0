package testenv

import (
	"math/rand/v2"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Ref parses "repo:tag" on this registry.
func (r *Registry) Ref(t testing.TB, repoTag string) name.Reference {
	t.Helper()
	ref, err := name.ParseReference(r.Host+"/"+repoTag, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	return ref
}

// Push writes an image or index under repoTag.
func (r *Registry) Push(t testing.TB, repoTag string, img v1.Image) {
	t.Helper()
	if err := remote.Write(r.Ref(t, repoTag), img); err != nil {
		t.Fatalf("push %s: %v", repoTag, err)
	}
}

// PushIndex writes an image index under repoTag.
func (r *Registry) PushIndex(t testing.TB, repoTag string, idx v1.ImageIndex) {
	t.Helper()
	if err := remote.WriteIndex(r.Ref(t, repoTag), idx); err != nil {
		t.Fatalf("push %s: %v", repoTag, err)
	}
}

// DockerImage is a Docker-media-type image with several gzip layers.
func DockerImage(t testing.TB, layers int, layerSize int64) v1.Image {
	t.Helper()
	img, err := random.Image(layerSize, int64(layers))
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// OCIImage is an OCI-media-type image.
func OCIImage(t testing.TB, layers int, layerSize int64) v1.Image {
	t.Helper()
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	for range layers {
		l, err := random.Layer(layerSize, types.OCILayer)
		if err != nil {
			t.Fatal(err)
		}
		img, err = mutate.AppendLayers(img, l)
		if err != nil {
			t.Fatal(err)
		}
	}
	return img
}

// RawBlobImage is an image whose single layer is size bytes of seeded
// random data stored as-is (no compression step), for large-blob tests.
func RawBlobImage(t testing.TB, size int64, seed uint64) (v1.Image, v1.Layer) {
	t.Helper()
	data := RandomBytes(size, seed)
	layer := static.NewLayer(data, types.DockerLayer)
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		t.Fatal(err)
	}
	return img, layer
}

// RandomBytes returns size deterministic pseudo-random bytes.
func RandomBytes(size int64, seed uint64) []byte {
	var key [32]byte
	for i := range 8 {
		key[i] = byte(seed >> (8 * i))
	}
	data := make([]byte, size)
	_, _ = rand.NewChaCha8(key).Read(data)
	return data
}

// MultiArchIndex is an OCI index with linux/amd64 and linux/arm64 images.
func MultiArchIndex(t testing.TB) (v1.ImageIndex, map[string]v1.Image) {
	t.Helper()
	imgs := map[string]v1.Image{}
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	for _, arch := range []string{"amd64", "arm64"} {
		img := OCIImage(t, 2, 2048)
		cf, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		cf = cf.DeepCopy()
		cf.OS, cf.Architecture = "linux", arch
		if img, err = mutate.ConfigFile(img, cf); err != nil {
			t.Fatal(err)
		}
		imgs[arch] = img
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{
			Add:        img,
			Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: arch}},
		})
	}
	return idx, imgs
}
