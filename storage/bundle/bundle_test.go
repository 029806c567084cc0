package bundle_test

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/stowage/stowage/storage"
	"github.com/stowage/stowage/storage/bundle"
)

func newStore(t *testing.T, root string) *storage.Store {
	t.Helper()
	s, err := storage.NewFilesystem(root)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func putBlob(t *testing.T, s *storage.Store, data []byte) digest.Digest {
	t.Helper()
	d := digest.FromBytes(data)
	st, err := s.NewStaging(d)
	if err != nil {
		t.Fatal(err)
	}
	defer st.File.Close()
	if _, err := st.File.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := s.CommitBlob(context.Background(), d, st); err != nil {
		t.Fatal(err)
	}
	return d
}

// seed puts one image (a fake manifest naming two blobs) under a tag.
func seed(t *testing.T, s *storage.Store) bundle.Image {
	t.Helper()
	ctx := t.Context()
	b1 := putBlob(t, s, bytes.Repeat([]byte("layer-one "), 2000))
	b2 := putBlob(t, s, []byte(`{"os":"linux"}`))
	man := []byte(`{"schemaVersion":2,"config":{"digest":"` + b2.String() + `"},"layers":[{"digest":"` + b1.String() + `"}]}`)
	md := digest.FromBytes(man)
	if err := s.PutManifest(ctx, "docker.io/team/app", md, man); err != nil {
		t.Fatal(err)
	}
	if err := s.PutTag(ctx, "docker.io/team/app", "v1", md, time.Now()); err != nil {
		t.Fatal(err)
	}
	return bundle.Image{Repository: "docker.io/team/app", Tag: "v1", Digest: md, Manifests: []digest.Digest{md},
		Blobs: []digest.Digest{b1, b2}}
}

func TestExportImportRoundTrip(t *testing.T) {
	t.Parallel()
	src := newStore(t, t.TempDir())
	im := seed(t, src)
	var tarball bytes.Buffer
	st, err := bundle.Export(t.Context(), src, &tarball, []bundle.Image{im, im})
	if err != nil || st.Blobs != 3 || st.Tags != 1 || st.Links != 3 {
		t.Fatalf("export: %+v %v", st, err)
	}

	dst := newStore(t, t.TempDir())
	now := time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)
	st, err = bundle.Import(t.Context(), dst, bytes.NewReader(tarball.Bytes()), now)
	if err != nil || st.Blobs != 3 || st.Tags != 1 || st.Links != 3 {
		t.Fatalf("import: %+v %v", st, err)
	}
	tag, err := dst.GetTag(t.Context(), im.Repository, "v1")
	if err != nil || tag.Digest != im.Digest || !tag.FetchedAt.Equal(now) {
		t.Fatalf("tag: %+v %v", tag, err)
	}
	for _, d := range im.Blobs {
		if ok, err := dst.BlobLinked(t.Context(), im.Repository, d); !ok || err != nil {
			t.Fatalf("blob %s not linked: %v", d, err)
		}
	}
	// Idempotent: nothing is written again.
	st, err = bundle.Import(t.Context(), dst, bytes.NewReader(tarball.Bytes()), now.Add(time.Hour))
	if err != nil || st.Blobs != 0 || st.BlobsPresent != 3 || st.Links != 0 || st.Tags != 0 {
		t.Fatalf("re-import: %+v %v", st, err)
	}
	if tag, _ := dst.GetTag(t.Context(), im.Repository, "v1"); !tag.FetchedAt.Equal(now) {
		t.Fatalf("re-import touched the tag: %v", tag.FetchedAt)
	}
}

func TestImportCorruptBlob(t *testing.T) {
	t.Parallel()
	good := []byte("the real bytes")
	d := digest.FromBytes(good)
	hex := d.Encoded()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	bad := []byte("the fake bytes")
	_ = tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "docker/registry/v2/blobs/sha256/" + hex[:2] + "/" + hex + "/data", Size: int64(len(bad)), Mode: 0o644})
	_, _ = tw.Write(bad)
	link := []byte(d.String())
	_ = tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "docker/registry/v2/repositories/team/x/_layers/sha256/" + hex + "/link", Size: int64(len(link)), Mode: 0o644})
	_, _ = tw.Write(link)
	_ = tw.Close()

	root := t.TempDir()
	s := newStore(t, root)
	_, err := bundle.Import(t.Context(), s, &buf, time.Now())
	if !errors.Is(err, bundle.ErrCorrupt) || !errors.Is(err, bundle.ErrMissing) {
		t.Fatalf("want corrupt + missing, got %v", err)
	}
	if _, err := s.StatBlob(t.Context(), d); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("corrupt blob committed: %v", err)
	}
	if ok, _ := s.BlobLinked(t.Context(), "team/x", d); ok {
		t.Fatal("link to a corrupt blob written")
	}
	if left := stagingFiles(t, root); len(left) != 0 {
		t.Fatalf("staging leftovers: %v", left)
	}
}

// stagingFiles lists the files in the staging area of root other than the
// Stores' lock files.
func stagingFiles(t *testing.T, root string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(filepath.Join(root, "stowage", "staging"), func(p string, de fs.DirEntry, err error) error {
		if err == nil && !de.IsDir() && filepath.Ext(p) != ".lock" {
			out = append(out, p)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestImportRefusesUnsafeEntries: entries that escape the root, links,
// devices and files outside the registry layout are refused, and nothing
// is written outside the root.
func TestImportRefusesUnsafeEntries(t *testing.T) {
	t.Parallel()
	data := []byte("x")
	d := digest.FromBytes(data)
	hex := d.Encoded()
	blobName := "docker/registry/v2/blobs/sha256/" + hex[:2] + "/" + hex + "/data"
	cases := []struct {
		name string
		hdr  tar.Header
		want error
	}{
		{"dotdot", tar.Header{Typeflag: tar.TypeReg, Name: "../evil"}, bundle.ErrUnsafeEntry},
		{"dotdot inside", tar.Header{Typeflag: tar.TypeReg, Name: "docker/registry/v2/../../../evil"}, bundle.ErrUnsafeEntry},
		{"absolute", tar.Header{Typeflag: tar.TypeReg, Name: "/tmp/stowage-bundle-test-evil"}, bundle.ErrUnsafeEntry},
		{"symlink", tar.Header{Typeflag: tar.TypeSymlink, Name: blobName, Linkname: "/etc/passwd"}, bundle.ErrUnsafeEntry},
		{"symlink dir", tar.Header{Typeflag: tar.TypeSymlink, Name: "docker/registry/v2/repositories/evil", Linkname: "../../../../"}, bundle.ErrUnsafeEntry},
		{"hardlink", tar.Header{Typeflag: tar.TypeLink, Name: blobName, Linkname: "/etc/passwd"}, bundle.ErrUnsafeEntry},
		{"char device", tar.Header{Typeflag: tar.TypeChar, Name: "docker/registry/v2/null", Devmajor: 1, Devminor: 3}, bundle.ErrUnsafeEntry},
		{"fifo", tar.Header{Typeflag: tar.TypeFifo, Name: "docker/registry/v2/fifo"}, bundle.ErrUnsafeEntry},
		{"not layout", tar.Header{Typeflag: tar.TypeReg, Name: "etc/cron.d/evil"}, bundle.ErrNotLayout},
		{"uploads", tar.Header{Typeflag: tar.TypeReg, Name: "docker/registry/v2/repositories/x/_uploads/abc/data"}, bundle.ErrNotLayout},
		{"bad repo", tar.Header{Typeflag: tar.TypeReg, Name: "docker/registry/v2/repositories/UP/_layers/sha256/" + hex + "/link"}, bundle.ErrNotLayout},
		{"dir outside", tar.Header{Typeflag: tar.TypeDir, Name: "etc/"}, bundle.ErrNotLayout},
	}
	base := t.TempDir()
	root := filepath.Join(base, "root")
	s := newStore(t, root)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			tw := tar.NewWriter(&buf)
			h := tc.hdr
			h.Mode = 0o644
			if h.Typeflag == tar.TypeReg {
				h.Size = int64(len(data))
			}
			if err := tw.WriteHeader(&h); err != nil {
				t.Fatal(err)
			}
			if h.Typeflag == tar.TypeReg {
				_, _ = tw.Write(data)
			}
			_ = tw.Close()
			if _, err := bundle.Import(t.Context(), s, &buf, time.Now()); !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
	// Nothing outside the root, no link or device inside it, no blob.
	entries, _ := os.ReadDir(base)
	if len(entries) != 1 || entries[0].Name() != "root" {
		t.Fatalf("written outside the root: %v", entries)
	}
	if _, err := os.Lstat("/tmp/stowage-bundle-test-evil"); err == nil {
		t.Fatal("/tmp/evil exists")
	}
	_ = filepath.WalkDir(root, func(p string, de fs.DirEntry, err error) error {
		if err == nil && (de.Type()&(fs.ModeSymlink|fs.ModeDevice|fs.ModeNamedPipe) != 0 || strings.Contains(p, "evil")) {
			t.Errorf("unexpected %s (%v)", p, de.Type())
		}
		return nil
	})
	if _, err := s.StatBlob(t.Context(), d); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("blob from a link entry: %v", err)
	}
}

// An import replaces a cached tag that is older than the bundle's and keeps
// one the cache resolved after the bundle was exported.
func TestImportKeepsNewerTag(t *testing.T) {
	t.Parallel()
	src := newStore(t, t.TempDir())
	im := seed(t, src)
	exported, err := src.GetTag(t.Context(), im.Repository, "v1")
	if err != nil {
		t.Fatal(err)
	}
	var tarball bytes.Buffer
	if _, err := bundle.Export(t.Context(), src, &tarball, []bundle.Image{im}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		fetched time.Time
		keep    bool
	}{
		{"cache newer", exported.FetchedAt.Add(time.Hour), true},
		{"cache older", exported.FetchedAt.Add(-time.Hour), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dst := newStore(t, t.TempDir())
			other := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","layers":[]}`)
			od := digest.FromBytes(other)
			if err := dst.PutManifest(t.Context(), im.Repository, od, other); err != nil {
				t.Fatal(err)
			}
			if err := dst.PutTag(t.Context(), im.Repository, "v1", od, tc.fetched); err != nil {
				t.Fatal(err)
			}
			st, err := bundle.Import(t.Context(), dst, bytes.NewReader(tarball.Bytes()), time.Now())
			if err != nil {
				t.Fatal(err)
			}
			tag, err := dst.GetTag(t.Context(), im.Repository, "v1")
			if err != nil {
				t.Fatal(err)
			}
			want, kept, tags := im.Digest, 0, 1
			if tc.keep {
				want, kept, tags = od, 1, 0
			}
			if tag.Digest != want || st.TagsKept != kept || st.Tags != tags {
				t.Fatalf("tag -> %s (want %s), stats %+v", tag.Digest, want, st)
			}
			// The bundle's manifest is imported either way, by digest.
			if _, err := dst.GetManifest(t.Context(), im.Repository, im.Digest); err != nil {
				t.Fatal(err)
			}
		})
	}
}
