package storage_test

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/opencontainers/go-digest"

	"github.com/stowage/stowage/storage"
	"github.com/stowage/stowage/storage/storagetest"
)

// localPath is where a driver path lives under root.
func localPath(root, p string) string { return filepath.Join(root, filepath.FromSlash(p)) }

func layerDigests(t *testing.T, img v1.Image) []v1.Hash {
	t.Helper()
	ls, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	var out []v1.Hash
	for _, l := range ls {
		h, err := l.Digest()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, h)
	}
	return out
}

func kinds(ps []storage.Problem) []string {
	var out []string
	for _, p := range ps {
		out = append(out, p.Kind+": "+p.What)
	}
	slices.Sort(out)
	return out
}

// TestVerifyReportsAndRepairs: on a layout a stock registry wrote, a
// flipped byte in a blob, a blob a link points to removed, a corrupt tag
// link and a corrupt fetched-at record are reported; --repair removes
// them (and what that leaves dangling), a second verify is clean, and the
// stock registry still serves what remains with the right digests.
func TestVerifyReportsAndRepairs(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	root := t.TempDir()
	reg := storagetest.StartStockRegistry(t, root)
	app := reg.PushRandom(t, "lib/app:v1", 2, 1024)
	other := reg.PushRandom(t, "lib/other:v1", 2, 1024)
	third := reg.PushRandom(t, "lib/third:v1", 1, 1024)
	reg.PushRandom(t, "lib/fine:v1", 1, 1024)
	s := newFS(t, root)
	res, err := s.Verify(ctx, storage.VerifyOptions{})
	if err != nil || len(res.Problems) != 0 {
		t.Fatalf("a stock registry's layout: %v %v", err, res.Problems)
	}
	if res.Blobs < 12 || res.Tags != 4 {
		t.Fatalf("checked %+v", res)
	}

	// A flipped byte in app's first layer.
	appLayer := layerDigests(t, app)[0]
	p := localPath(root, storage.BlobDataPath(digestOf(appLayer)))
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	b[10] ^= 0xff
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	// other's first layer gone, its link left.
	otherLayer := layerDigests(t, other)[0]
	if err := os.RemoveAll(filepath.Dir(localPath(root, storage.BlobDataPath(digestOf(otherLayer))))); err != nil {
		t.Fatal(err)
	}
	// third's tag link corrupt.
	if err := os.WriteFile(localPath(root, storage.TagCurrentLinkPath("lib/third", "v1")), []byte("sha256:nope"), 0o644); err != nil {
		t.Fatal(err)
	}
	// fine's fetched-at record corrupt.
	if err := os.WriteFile(localPath(root, storage.TagFetchedPath("lib/fine", "v1")), []byte("yesterday"), 0o644); err != nil {
		t.Fatal(err)
	}

	res, err = s.Verify(ctx, storage.VerifyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"blob: content does not match its digest",
		"layer-link: points at a missing blob " + otherLayer.String(),
		"tag: current link is not a digest",
		"tag: fetched-at record does not parse",
	}
	if got := kinds(res.Problems); !slices.Equal(got, want) {
		t.Fatalf("problems:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	res, err = s.Verify(ctx, storage.VerifyOptions{Repair: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range res.Problems {
		if !p.Repaired {
			t.Errorf("not repaired: %v", p)
		}
	}
	// The corrupt blob went with its link in the same run.
	if len(res.Problems) != 4 {
		t.Errorf("repair run found %v", kinds(res.Problems))
	}
	if res, err := s.Verify(ctx, storage.VerifyOptions{}); err != nil || len(res.Problems) != 0 {
		t.Fatalf("after repair: %v %v", err, kinds(res.Problems))
	}
	if _, err := s.StatBlob(ctx, digestOf(appLayer)); err == nil {
		t.Error("the corrupt blob is still there")
	}
	// The stock registry on the same root: app's manifest is served and
	// its corrupt layer is unknown (not served wrong); other's intact
	// layer still pulls; the removed tags are gone.
	if err := reg.Pull(t, "lib/app:v1"); err == nil || !strings.Contains(err.Error(), "BLOB_UNKNOWN") {
		t.Errorf("pull of app with its corrupt layer removed: %v, want blob unknown", err)
	}
	if err := reg.Pull(t, "lib/third:v1"); err == nil {
		t.Error("third:v1 still pulls after its corrupt tag was removed")
	}
	third2, _ := third.Digest()
	if err := reg.Pull(t, "lib/third@"+third2.String()); err != nil {
		t.Errorf("third by digest: %v", err)
	}
}

func digestOf(h v1.Hash) digest.Digest { return digest.Digest(h.String()) }
