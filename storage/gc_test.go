package storage_test

import (
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/opencontainers/go-digest"

	"github.com/stowage/stowage/storage"
	"github.com/stowage/stowage/storage/storagetest"
)

// age sets every file and directory under root to t.
func age(t *testing.T, root string, when time.Time) {
	t.Helper()
	err := filepath.WalkDir(root, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Chtimes(p, when, when)
	})
	if err != nil {
		t.Fatal(err)
	}
}

func imageDigests(t *testing.T, img v1.Image) (manifest digest.Digest, blobs []digest.Digest) {
	t.Helper()
	m, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	c, err := img.ConfigName()
	if err != nil {
		t.Fatal(err)
	}
	blobs = append(blobs, digestOf(c))
	for _, l := range layerDigests(t, img) {
		blobs = append(blobs, digestOf(l))
	}
	return digestOf(m), blobs
}

func present(t *testing.T, s *storage.Store, ds ...digest.Digest) bool {
	t.Helper()
	for _, d := range ds {
		if _, err := s.StatBlob(t.Context(), d); err != nil {
			return false
		}
	}
	return true
}

// TestGCCollectsOnlyUnreferencedOldContent: on a stock registry's layout,
// gc removes an untagged old image and an old loose layer; it keeps
// tagged and pinned images, a young loose layer (fetched just before its
// manifest) and a layer a server used recently; --dry-run removes
// nothing; the stock registry still pulls every tag afterwards.
func TestGCCollectsOnlyUnreferencedOldContent(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	root := t.TempDir()
	reg := storagetest.StartStockRegistry(t, root)
	old := reg.PushRandom(t, "lib/app:v1", 2, 1024)
	reg.PushRandom(t, "lib/app:v1", 2, 1024) // moves the tag: old is untagged
	pinnedImg := reg.PushRandom(t, "lib/pinned:v1", 1, 1024)
	reg.PushRandom(t, "lib/other:latest", 2, 1024)
	s := newFS(t, root)
	// pinned's tag is moved too, but a pin keeps the old image.
	reg.PushRandom(t, "lib/pinned:v1", 1, 1024)
	pm, pblobs := imageDigests(t, pinnedImg)
	if err := s.PutPin(ctx, storage.Pin{Name: "list", Blobs: append([]digest.Digest{pm}, pblobs...)}); err != nil {
		t.Fatal(err)
	}
	loose := commitBlob(t, s, "a layer fetched by digest, long ago")
	used := commitBlob(t, s, "a layer a server served a minute ago")
	now := time.Now()
	age(t, filepath.Join(root, "docker"), now.Add(-24*time.Hour))
	young := commitBlob(t, s, "a layer fetched just before its manifest")

	oldM, oldBlobs := imageDigests(t, old)
	opts := storage.GCOptions{Grace: 10 * time.Minute, Access: map[digest.Digest]time.Time{used: now.Add(-time.Minute)}}

	dry := opts
	dry.DryRun = true
	var items []storage.GCItem
	dry.Report = func(it storage.GCItem) { items = append(items, it) }
	res, err := s.GC(ctx, dry)
	if err != nil {
		t.Fatal(err)
	}
	if res.Blobs != len(oldBlobs)+2 || res.Revisions != 1 || len(items) != res.Blobs+res.Revisions {
		t.Fatalf("dry run: %+v, items %v; want %d blobs (old image's manifest, config, layers, loose) and 1 revision", res, items, len(oldBlobs)+2)
	}
	if !present(t, s, append(oldBlobs, oldM, loose)...) {
		t.Fatal("a dry run removed something")
	}

	res, err = s.GC(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	if res.Blobs != len(oldBlobs)+2 || res.Revisions != 1 {
		t.Fatalf("gc: %+v", res)
	}
	for _, d := range append(oldBlobs, oldM, loose) {
		if present(t, s, d) {
			t.Errorf("%s not collected", d)
		}
	}
	if !present(t, s, append(pblobs, pm, young, used)...) {
		t.Error("gc removed pinned, young or recently used content")
	}
	for _, ref := range []string{"lib/app:v1", "lib/pinned:v1", "lib/other:latest", "lib/pinned@" + pm.String()} {
		if err := reg.Pull(t, ref); err != nil {
			t.Errorf("stock registry after gc: %s: %v", ref, err)
		}
	}
	if res, err := s.Verify(ctx, storage.VerifyOptions{}); err != nil || len(res.Problems) != 0 {
		t.Errorf("verify after gc: %v %v", err, kinds(res.Problems))
	}
	// A second run has nothing left to do.
	if res, err := s.GC(ctx, opts); err != nil || res.Blobs != 0 || res.Revisions != 0 {
		t.Errorf("second gc: %+v %v", res, err)
	}
}

func commitBlob(t *testing.T, s *storage.Store, content string) digest.Digest {
	t.Helper()
	d := digest.FromString(content)
	st, err := s.NewStaging(d)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.File.WriteString(content); err != nil {
		t.Fatal(err)
	}
	if err := s.CommitBlob(t.Context(), d, st); err != nil {
		t.Fatal(err)
	}
	return d
}
