package proxy_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/validate"

	"github.com/stowage/stowage/proxy/internal/testenv"
)

// TestStockRegistryServesOurCache: a stock distribution registry pointed at
// Stowage's cache directory serves a cached image with identical digests.
func TestStockRegistryServesOurCache(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	img := testenv.DockerImage(t, 3, 2048)
	idx, _ := testenv.MultiArchIndex(t)
	e.up.Push(t, "library/app:v1", img)
	e.up.PushIndex(t, "org/multi:v1", idx)
	for _, ref := range []string{"app:v1", "org/multi:v1"} {
		d, err := remote.Get(e.ref(ref))
		if err != nil {
			t.Fatal(err)
		}
		if d.MediaType.IsIndex() {
			ii, _ := d.ImageIndex()
			if err := validate.Index(ii); err != nil { // pulls every child
				t.Fatal(err)
			}
		} else {
			im, _ := d.Image()
			if err := validate.Image(im); err != nil {
				t.Fatal(err)
			}
		}
	}
	stock := testenv.Start(t, testenv.Options{RootDir: e.root})
	for ref, want := range map[string]func() (string, error){
		"docker.io/library/app:v1": func() (string, error) { d, err := img.Digest(); return d.String(), err },
		"docker.io/org/multi:v1":   func() (string, error) { d, err := idx.Digest(); return d.String(), err },
	} {
		w, err := want()
		if err != nil {
			t.Fatal(err)
		}
		d, err := remote.Get(stock.Ref(t, ref))
		if err != nil {
			t.Fatalf("stock registry: %s: %v", ref, err)
		}
		if d.Digest.String() != w {
			t.Fatalf("stock registry: %s digest %s, want %s", ref, d.Digest, w)
		}
		if d.MediaType.IsIndex() {
			ii, _ := d.ImageIndex()
			if err := validate.Index(ii); err != nil {
				t.Fatalf("stock registry: %s: %v", ref, err)
			}
			continue
		}
		im, _ := d.Image()
		if err := validate.Image(im); err != nil {
			t.Fatalf("stock registry: %s: %v", ref, err)
		}
	}
	// The catalog lists what is cached, named as the stock registry does.
	resp := e.get(context.Background(), http.MethodGet, "/v2/_catalog", nil)
	defer resp.Body.Close()
	var cat struct{ Repositories []string }
	if err := json.NewDecoder(resp.Body).Decode(&cat); err != nil {
		t.Fatal(err)
	}
	if len(cat.Repositories) != 2 || cat.Repositories[0] != "docker.io/library/app" || cat.Repositories[1] != "docker.io/org/multi" {
		t.Fatalf("catalog %v", cat.Repositories)
	}
}

// TestServeStockRegistryContent: Stowage serves an image that a stock
// registry wrote into its directory, with the upstream unreachable.
func TestServeStockRegistryContent(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	stock := testenv.Start(t, testenv.Options{RootDir: root})
	img := testenv.OCIImage(t, 2, 4096)
	stock.Push(t, "docker.io/library/local:v1", img)
	want, _ := img.Digest()
	raw, _ := img.RawManifest()
	stock.Close()

	e := newEnv(t, envOptions{root: root})
	e.up.Close() // nothing may come from the upstream
	d, err := remote.Get(e.ref("local:v1"))
	if err != nil {
		t.Fatal(err)
	}
	if d.Digest != want || !bytes.Equal(d.Manifest, raw) {
		t.Fatalf("digest %s, want %s", d.Digest, want)
	}
	im, _ := d.Image()
	if err := validate.Image(im); err != nil {
		t.Fatal(err)
	}
}
