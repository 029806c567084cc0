package storagetest

import (
	"context"
	"io"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/distribution/distribution/v3/configuration"
	"github.com/distribution/distribution/v3/registry/handlers"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/filesystem" // registers the driver
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/google/go-containerregistry/pkg/v1/validate"
	"github.com/sirupsen/logrus"
)

// StockRegistry is the distribution registry itself, serving a root
// directory on loopback: tests write a layout with it, or check that what
// Stowage left (after eviction, gc or a repair) still works for it.
type StockRegistry struct {
	// Host is host:port for image references.
	Host string
}

// StartStockRegistry serves root with a stock registry until the test
// ends.
func StartStockRegistry(t testing.TB, root string) *StockRegistry {
	t.Helper()
	cfg := &configuration.Configuration{}
	cfg.Log.Level = "error"
	cfg.Log.AccessLog.Disabled = true
	cfg.Storage = configuration.Storage{"filesystem": configuration.Parameters{"rootdirectory": root}}
	cfg.Storage["maintenance"] = configuration.Parameters{"uploadpurging": map[any]any{"enabled": false}}
	logrus.SetOutput(io.Discard)
	ctx, cancel := context.WithCancel(context.Background())
	srv := httptest.NewServer(handlers.NewApp(ctx, cfg))
	t.Cleanup(func() {
		srv.Close()
		cancel()
	})
	return &StockRegistry{Host: strings.TrimPrefix(srv.URL, "http://")}
}

// Ref parses repo:tag or repo@digest on this registry.
func (r *StockRegistry) Ref(t testing.TB, ref string) name.Reference {
	t.Helper()
	n, err := name.ParseReference(r.Host+"/"+ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// PushRandom pushes a random image of layers layers of size bytes under
// repo:tag and returns it.
func (r *StockRegistry) PushRandom(t testing.TB, repoTag string, layers int, size int64) v1.Image {
	t.Helper()
	img, err := random.Image(size, int64(layers))
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(r.Ref(t, repoTag), img); err != nil {
		t.Fatalf("push %s: %v", repoTag, err)
	}
	return img
}

// Pull fetches ref from the registry and checks every blob's digest and
// size (go-containerregistry's validate).
func (r *StockRegistry) Pull(t testing.TB, ref string) error {
	t.Helper()
	img, err := remote.Image(r.Ref(t, ref))
	if err != nil {
		return err
	}
	return validate.Image(img)
}

// PushRandomIndex pushes a random image index of count images under
// repo:tag and returns it.
func (r *StockRegistry) PushRandomIndex(t testing.TB, repoTag string, count int) v1.ImageIndex {
	t.Helper()
	idx, err := random.Index(512, 1, int64(count))
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.WriteIndex(r.Ref(t, repoTag), idx); err != nil {
		t.Fatalf("push %s: %v", repoTag, err)
	}
	return idx
}

// PushReferrer pushes, by digest into repo, a small image whose subject is
// the manifest subject (a signature or an SBOM, say), and returns it.
func (r *StockRegistry) PushReferrer(t testing.TB, repo string, subject v1.Descriptor) v1.Image {
	t.Helper()
	img, err := random.Image(256, 1)
	if err != nil {
		t.Fatal(err)
	}
	ref, ok := mutate.Subject(mutate.MediaType(img, types.OCIManifestSchema1), subject).(v1.Image)
	if !ok {
		t.Fatal("mutate.Subject did not return an image")
	}
	d, err := ref.Digest()
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(r.Ref(t, repo+"@"+d.String()), ref); err != nil {
		t.Fatalf("push referrer: %v", err)
	}
	return ref
}

// PullAny fetches ref, an image or an index, and checks every blob of it.
func (r *StockRegistry) PullAny(t testing.TB, ref string) error {
	t.Helper()
	desc, err := remote.Get(r.Ref(t, ref))
	if err != nil {
		return err
	}
	if desc.MediaType.IsIndex() {
		idx, err := desc.ImageIndex()
		if err != nil {
			return err
		}
		return validate.Index(idx)
	}
	img, err := desc.Image()
	if err != nil {
		return err
	}
	return validate.Image(img)
}
