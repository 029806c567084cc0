package evict_test

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/stowage/stowage/storage"
	"github.com/stowage/stowage/storage/evict"
	"github.com/stowage/stowage/storage/storagetest"
)

// TestEvictionKeepsAStockRegistryConsistent: images a stock registry
// wrote, a cap that fits about one of them: eviction removes the
// unpinned image's layers with their links in one pass, keeps every
// manifest and the pinned image; verify finds nothing dangling, and the
// stock registry on the same root still pulls the pinned image and
// answers "blob unknown" (not an error) for the evicted layers.
func TestEvictionKeepsAStockRegistryConsistent(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	root := t.TempDir()
	reg := storagetest.StartStockRegistry(t, root)
	reg.PushRandom(t, "lib/big:v1", 3, 64<<10)
	reg.PushRandom(t, "lib/pinned:v1", 2, 64<<10)
	// Everything is a day old.
	old := time.Now().Add(-24 * time.Hour)
	if err := filepath.WalkDir(filepath.Join(root, "docker"), func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Chtimes(p, old, old)
	}); err != nil {
		t.Fatal(err)
	}
	s, err := storage.NewFilesystem(root)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	pinnedTag, err := s.GetTag(ctx, "lib/pinned", "v1")
	if err != nil {
		t.Fatal(err)
	}
	body, err := s.GetManifestAny(ctx, pinnedTag.Digest)
	if err != nil {
		t.Fatal(err)
	}
	pin := storage.Pin{Name: "list", Blobs: []digest.Digest{pinnedTag.Digest}}
	for _, f := range strings.Split(string(body), `"digest":"`)[1:] {
		pin.Blobs = append(pin.Blobs, digest.Digest(f[:71]))
	}
	if err := s.PutPin(ctx, pin); err != nil {
		t.Fatal(err)
	}

	eng, err := evict.New(s, evict.Policy{MaxSize: 200 << 10, Grace: 10 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if err := eng.Index().Rebuild(ctx, s); err != nil {
		t.Fatal(err)
	}
	before, objects := eng.Index().Usage()
	res, err := eng.Pass(ctx)
	if err != nil {
		t.Fatal(err)
	}
	after, _ := eng.Index().Usage()
	if res.Objects == 0 || after > 180<<10 || objects < 9 {
		t.Fatalf("pass %+v: usage %d -> %d (%d objects); want at most 90%% of 200 KiB", res, before, after, objects)
	}
	if err := reg.Pull(t, "lib/pinned:v1"); err != nil {
		t.Errorf("pinned image after eviction: %v", err)
	}
	if _, err := s.GetTag(ctx, "lib/big", "v1"); err != nil {
		t.Errorf("the evicted image's tag: %v", err)
	}
	if err := reg.Pull(t, "lib/big:v1"); err == nil || !strings.Contains(err.Error(), "BLOB_UNKNOWN") {
		t.Errorf("pull of the evicted image from the stock registry: %v, want blob unknown", err)
	}
	if v, err := s.Verify(ctx, storage.VerifyOptions{}); err != nil || len(v.Problems) != 0 {
		t.Errorf("verify after eviction: %v %v", err, v.Problems)
	}
}
