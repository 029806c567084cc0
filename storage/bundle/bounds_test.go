package bundle_test

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/stowage/stowage/storage"
	"github.com/stowage/stowage/storage/bundle"
)

type entry struct {
	name string
	size int64
	body func() io.Reader
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// zeroBlob is a blob of n zero bytes, generated as it is read.
func zeroBlob(n int64) (digest.Digest, func() io.Reader) {
	h := sha256.New()
	_, _ = io.Copy(h, io.LimitReader(zeros{}, n))
	return digest.NewDigest(digest.SHA256, h), func() io.Reader { return io.LimitReader(zeros{}, n) }
}

func bytesEntry(name string, b []byte) entry {
	return entry{name: name, size: int64(len(b)), body: func() io.Reader { return bytes.NewReader(b) }}
}

func blobName(d digest.Digest) string {
	return "docker/registry/v2/blobs/sha256/" + d.Encoded()[:2] + "/" + d.Encoded() + "/data"
}

func linkEntry(name string, d digest.Digest) entry { return bytesEntry(name, []byte(d.String())) }

// stream writes the entries as a tar into a pipe, generated while the
// import reads it: only a plain io.Reader, never held whole.
func stream(t *testing.T, entries []entry) io.Reader {
	t.Helper()
	pr, pw := io.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		tw := tar.NewWriter(pw)
		for _, e := range entries {
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: e.name, Size: e.size, Mode: 0o644}); err != nil {
				pw.CloseWithError(err)
				return
			}
			if _, err := io.Copy(tw, e.body()); err != nil {
				pw.CloseWithError(err)
				return
			}
		}
		pw.CloseWithError(tw.Close())
	}()
	t.Cleanup(func() {
		_ = pr.Close()
		<-done
	})
	return struct{ io.Reader }{pr}
}

func manifestDeclaring(layer digest.Digest, size int64) []byte {
	return fmt.Appendf(nil, `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",`+
		`"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":2},`+
		`"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"%s","size":%d}]}`,
		digest.FromString("{}"), layer, size)
}

// TestImportRefusesUndeclaredLargeBlob: a small bundle that expands to a
// large blob no manifest declares (or declares smaller) is refused before
// the entry is read; nothing is committed or staged.
func TestImportRefusesUndeclaredLargeBlob(t *testing.T) {
	t.Parallel()
	const size = 64 << 20
	d, body := zeroBlob(size)
	layerLink := "docker/registry/v2/repositories/team/x/_layers/sha256/" + d.Encoded() + "/link"
	man := manifestDeclaring(d, 1024)
	for name, entries := range map[string][]entry{
		"undeclared":       {{name: blobName(d), size: size, body: body}, linkEntry(layerLink, d)},
		"declared smaller": {bytesEntry(blobName(digest.FromBytes(man)), man), {name: blobName(d), size: size, body: body}, linkEntry(layerLink, d)},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			root := t.TempDir()
			s := newStore(t, root)
			_, err := bundle.Import(t.Context(), s, stream(t, entries), time.Now())
			if !errors.Is(err, bundle.ErrTooLarge) {
				t.Fatalf("want ErrTooLarge, got %v", err)
			}
			if _, err := s.StatBlob(t.Context(), d); !errors.Is(err, storage.ErrNotFound) {
				t.Fatalf("oversized blob committed: %v", err)
			}
			if ok, _ := s.BlobLinked(t.Context(), "team/x", d); ok {
				t.Fatal("link to a refused blob written")
			}
			if left := stagingFiles(t, root); len(left) != 0 {
				t.Fatalf("staging leftovers: %v", left)
			}
		})
	}
}

// TestImportRefusesOversizedManifest: a "manifest" over the manifest cap,
// in the bundle or already in the cache as a blob, is never read into
// memory, committed as a manifest or linked.
func TestImportRefusesOversizedManifest(t *testing.T) {
	t.Parallel()
	big := bytes.Repeat([]byte(" "), bundle.MaxManifestSize+1)
	big[0] = '{'
	d := digest.FromBytes(big)
	rev := "docker/registry/v2/repositories/team/x/_manifests/revisions/sha256/" + d.Encoded() + "/link"
	tag := "docker/registry/v2/repositories/team/x/_manifests/tags/v1/current/link"

	t.Run("in the bundle", func(t *testing.T) {
		t.Parallel()
		s := newStore(t, t.TempDir())
		_, err := bundle.Import(t.Context(), s, stream(t, []entry{bytesEntry(blobName(d), big), linkEntry(rev, d), linkEntry(tag, d)}), time.Now())
		if !errors.Is(err, bundle.ErrTooLarge) {
			t.Fatalf("want ErrTooLarge, got %v", err)
		}
		if _, err := s.StatBlob(t.Context(), d); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("oversized manifest committed: %v", err)
		}
		if _, err := s.GetTag(t.Context(), "team/x", "v1"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("tag to an oversized manifest: %v", err)
		}
	})
	t.Run("in the cache", func(t *testing.T) {
		t.Parallel()
		s := newStore(t, t.TempDir())
		putBlob(t, s, big) // a layer a fill committed
		_, err := bundle.Import(t.Context(), s, stream(t, []entry{linkEntry(rev, d)}), time.Now())
		if !errors.Is(err, bundle.ErrTooLarge) {
			t.Fatalf("want ErrTooLarge, got %v", err)
		}
		if _, err := s.GetManifest(t.Context(), "team/x", d); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("a cached blob over the cap linked as a manifest: %v", err)
		}
	})
}

// TestImportLargeLayer: a layer over the manifest cap that its manifest
// declares is imported, from a stream when the manifest comes first (as
// Export writes it) and in any order from a seekable file.
func TestImportLargeLayer(t *testing.T) {
	t.Parallel()
	layer := bytes.Repeat([]byte("layer bytes "), (bundle.MaxManifestSize+100)/12)
	ld := digest.FromBytes(layer)
	man := manifestDeclaring(ld, int64(len(layer)))
	md := digest.FromBytes(man)
	cfg := []byte("{}")
	links := []entry{
		linkEntry("docker/registry/v2/repositories/team/x/_manifests/revisions/sha256/"+md.Encoded()+"/link", md),
		linkEntry("docker/registry/v2/repositories/team/x/_layers/sha256/"+ld.Encoded()+"/link", ld),
		linkEntry("docker/registry/v2/repositories/team/x/_manifests/tags/v1/current/link", md),
	}
	manifestFirst := append([]entry{bytesEntry(blobName(md), man), bytesEntry(blobName(digest.FromBytes(cfg)), cfg), bytesEntry(blobName(ld), layer)}, links...)
	layerFirst := append([]entry{bytesEntry(blobName(ld), layer), bytesEntry(blobName(md), man), bytesEntry(blobName(digest.FromBytes(cfg)), cfg)}, links...)
	file := func(t *testing.T, es []entry) io.Reader {
		b, err := io.ReadAll(stream(t, es))
		if err != nil {
			t.Fatal(err)
		}
		return bytes.NewReader(b)
	}
	for _, tc := range []struct {
		name string
		r    func(t *testing.T) io.Reader
		ok   bool
	}{
		{"stream, manifest first", func(t *testing.T) io.Reader { return stream(t, manifestFirst) }, true},
		{"file, layer first", func(t *testing.T) io.Reader { return file(t, layerFirst) }, true},
		{"stream, layer first", func(t *testing.T) io.Reader { return stream(t, layerFirst) }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := newStore(t, t.TempDir())
			st, err := bundle.Import(t.Context(), s, tc.r(t), time.Now())
			if !tc.ok {
				if !errors.Is(err, bundle.ErrTooLarge) {
					t.Fatalf("want ErrTooLarge, got %v", err)
				}
				return
			}
			if err != nil || st.Blobs != 3 || st.Tags != 1 {
				t.Fatalf("import: %+v %v", st, err)
			}
			if ok, err := s.BlobLinked(t.Context(), "team/x", ld); !ok || err != nil {
				t.Fatalf("layer not linked: %v", err)
			}
		})
	}
}

// TestExportWritesManifestsFirst: an exported bundle imports from a plain
// stream even when its layers exceed the manifest cap.
func TestExportWritesManifestsFirst(t *testing.T) {
	t.Parallel()
	src := newStore(t, t.TempDir())
	layer := bytes.Repeat([]byte{0xa5}, bundle.MaxManifestSize+1)
	ld := putBlob(t, src, layer)
	cd := putBlob(t, src, []byte("{}"))
	man := manifestDeclaring(ld, int64(len(layer)))
	md := digest.FromBytes(man)
	if err := src.PutManifest(t.Context(), "team/x", md, man); err != nil {
		t.Fatal(err)
	}
	var tarball bytes.Buffer
	im := bundle.Image{Repository: "team/x", Digest: md, Manifests: []digest.Digest{md}, Blobs: []digest.Digest{cd, ld}}
	if _, err := bundle.Export(t.Context(), src, &tarball, []bundle.Image{im}); err != nil {
		t.Fatal(err)
	}
	dst := newStore(t, t.TempDir())
	st, err := bundle.Import(t.Context(), dst, struct{ io.Reader }{&tarball}, time.Now())
	if err != nil || st.Blobs != 3 {
		t.Fatalf("import: %+v %v", st, err)
	}
}
