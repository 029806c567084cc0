package prefetch_test

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/stowage/stowage/proxy/internal/testenv"
	"github.com/stowage/stowage/proxy/prefetch"
	"github.com/stowage/stowage/storage/bundle"
)

// TestExportImportAcrossAirGap: prefetch, export, import into an empty
// cache; a new proxy serves the images with the upstream gone, digests
// identical; a stock registry serves the extracted bundle.
func TestExportImportAcrossAirGap(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil, "")
	refs, _ := sharedImages(t, e.up, 3)
	idx, _ := testenv.MultiArchIndex(t)
	e.up.PushIndex(t, "team/multi:v1", idx)
	want := map[string]string{}
	for _, r := range append(refs, "docker.io/team/multi:v1") {
		repoTag := strings.TrimPrefix(r, "docker.io/")
		desc, err := remote.Head(e.up.Ref(t, repoTag))
		if err != nil {
			t.Fatal(err)
		}
		want[repoTag] = desc.Digest.String()
	}
	rep, err := e.engine().Run(t.Context(), prefetch.Request{Images: append(refs, "docker.io/team/multi:v1")}, nil)
	if err != nil || !rep.OK() {
		t.Fatalf("%v %+v", err, rep)
	}
	var tarball bytes.Buffer
	st, err := bundle.Export(t.Context(), e.store, &tarball, prefetch.BundleImages(rep))
	if err != nil || st.Blobs != rep.Totals.Blobs+len(refs)+3 { // + image manifests, index and 2 children
		t.Fatalf("export: %+v %v (report blobs %d)", st, err, rep.Totals.Blobs)
	}
	e.up.Close() // the air gap

	// Import into an empty cache and pull through a new proxy.
	e2 := newEnv(t, e.up, "")
	if _, err := bundle.Import(t.Context(), e2.store, bytes.NewReader(tarball.Bytes()), time.Now()); err != nil {
		t.Fatal(err)
	}
	srv := newProxyServer(t, e2)
	for repoTag, dgst := range want {
		pullAll(t, srv+"/"+repoTag, dgst)
	}

	// A stock registry over the extracted bundle.
	dir := t.TempDir()
	extract(t, tarball.Bytes(), dir)
	stock := testenv.Start(t, testenv.Options{RootDir: dir})
	for repoTag, dgst := range want {
		pullAll(t, stock.Host+"/docker.io/"+repoTag, dgst)
	}
}

// pullAll pulls an image (every platform of an index that the bundle
// holds) and checks its digest.
func pullAll(t *testing.T, ref, want string) {
	t.Helper()
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	desc, err := remote.Get(r, remote.WithContext(t.Context()))
	if err != nil {
		t.Fatalf("%s: %v", ref, err)
	}
	if desc.Digest.String() != want {
		t.Fatalf("%s: digest %s, want %s", ref, desc.Digest, want)
	}
	if desc.MediaType.IsIndex() {
		idx, err := desc.ImageIndex()
		if err != nil {
			t.Fatal(err)
		}
		m, _ := idx.IndexManifest()
		for _, c := range m.Manifests {
			img, err := idx.Image(c.Digest)
			if err != nil {
				t.Fatal(err)
			}
			readLayers(t, ref, img.Layers)
		}
		return
	}
	img, err := desc.Image()
	if err != nil {
		t.Fatal(err)
	}
	readLayers(t, ref, img.Layers)
}

func readLayers(t *testing.T, ref string, layers func() ([]v1.Layer, error)) {
	t.Helper()
	ls, err := layers()
	if err != nil {
		t.Fatalf("%s: %v", ref, err)
	}
	for _, l := range ls {
		rc, err := l.Compressed()
		if err != nil {
			t.Fatalf("%s: %v", ref, err)
		}
		_, err = io.Copy(io.Discard, rc)
		rc.Close()
		if err != nil {
			t.Fatalf("%s: %v", ref, err)
		}
	}
}

// extract unpacks a bundle (trusted: written by Export) into dir.
func extract(t *testing.T, data []byte, dir string) {
	t.Helper()
	tr := tar.NewReader(bytes.NewReader(data))
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, filepath.FromSlash(h.Name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
