package storage_test

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/types"
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

// commitBlob stages and commits content, returning its digest.
func commitBlob(t testing.TB, s *storage.Store, content string) digest.Digest {
	t.Helper()
	d := digest.FromString(content)
	st, err := s.NewStaging(d)
	if err != nil {
		t.Fatal(err)
	}
	defer st.File.Close()
	if _, err := st.File.WriteString(content); err != nil {
		t.Fatal(err)
	}
	if err := s.CommitBlob(t.Context(), d, st); err != nil {
		t.Fatal(err)
	}
	return d
}

// TestGCKeepsIndexChildrenAndReferrers: a tagged multi-platform index
// keeps its child manifests and their blobs; an untagged manifest whose
// subject is the tagged image (a signature) is kept with its blobs; an
// untagged one whose subject is gone is collected.
func TestGCKeepsIndexChildrenAndReferrers(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	root := t.TempDir()
	reg := storagetest.StartStockRegistry(t, root)
	idx := reg.PushRandomIndex(t, "lib/multi:v1", 2)
	img := reg.PushRandom(t, "lib/app:v1", 1, 512)
	desc, err := partial.Descriptor(img)
	if err != nil {
		t.Fatal(err)
	}
	sig := reg.PushReferrer(t, "lib/app", *desc)
	orphanSubject := v1.Descriptor{MediaType: types.OCIManifestSchema1, Size: 2, Digest: v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("0", 64)}}
	orphan := reg.PushReferrer(t, "lib/app", orphanSubject)
	// The stock registry has no referrers API, so the client also pushed
	// the fallback tags (sha256-<subject>) listing the referrers: those
	// tags would keep both. Without them only the subject rule is left.
	fallback, err := filepath.Glob(filepath.Join(root, "docker/registry/v2/repositories/lib/app/_manifests/tags/sha256-*"))
	if err != nil || len(fallback) != 2 {
		t.Fatalf("fallback tags %v %v", fallback, err)
	}
	for _, f := range fallback {
		if err := os.RemoveAll(f); err != nil {
			t.Fatal(err)
		}
	}
	age(t, filepath.Join(root, "docker"), time.Now().Add(-24*time.Hour))
	s := newFS(t, root)

	res, err := s.GC(ctx, storage.GCOptions{Grace: 10 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	om, oblobs := imageDigests(t, orphan)
	// The orphan with its blobs, and the two fallback index manifests.
	if res.Revisions != 3 || res.Blobs != len(oblobs)+3 {
		t.Errorf("gc %+v; want the orphan referrer and the fallback indexes (3 revisions, %d blobs)", res, len(oblobs)+3)
	}
	if present(t, s, om) {
		t.Error("the orphan referrer was kept")
	}
	sm, sblobs := imageDigests(t, sig)
	if !present(t, s, append(sblobs, sm)...) {
		t.Error("the signature of a tagged image was collected")
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range im.Manifests {
		child, err := idx.Image(m.Digest)
		if err != nil {
			t.Fatal(err)
		}
		cm, cblobs := imageDigests(t, child)
		if !present(t, s, append(cblobs, cm)...) {
			t.Errorf("child %s of a tagged index (or its blobs) collected", cm)
		}
	}
	for _, ref := range []string{"lib/multi:v1", "lib/app:v1", "lib/app@" + sm.String()} {
		if err := reg.PullAny(t, ref); err != nil {
			t.Errorf("stock registry after gc: %s: %v", ref, err)
		}
	}
}
