package main

import (
	"bytes"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/stowage/stowage/storage"
)

// runOut runs the command tree with args and returns its standard output.
func runOut(t *testing.T, args ...string) (string, error) {
	t.Helper()
	root := newRootCmd()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetArgs(args)
	err := root.ExecuteContext(t.Context())
	return out.String(), err
}

// seedCache writes a manifest with one layer, tagged, through the store.
func seedCache(t *testing.T, root string) (layer, manifest digest.Digest) {
	t.Helper()
	s, err := storage.NewFilesystem(root)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := t.Context()
	body := []byte("layer bytes of a cached image")
	layer = digest.FromBytes(body)
	st, err := s.NewStaging(layer)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.File.Write(body); err != nil {
		t.Fatal(err)
	}
	if err := s.CommitBlob(ctx, layer, st); err != nil {
		t.Fatal(err)
	}
	if err := s.LinkBlob(ctx, "docker.io/library/app", layer); err != nil {
		t.Fatal(err)
	}
	m := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","layers":[{"digest":"` + layer.String() + `","size":29}]}`)
	manifest = digest.FromBytes(m)
	if err := s.PutManifest(ctx, "docker.io/library/app", manifest, m); err != nil {
		t.Fatal(err)
	}
	if err := s.PutTag(ctx, "docker.io/library/app", "v1", manifest, time.Now()); err != nil {
		t.Fatal(err)
	}
	return layer, manifest
}

// TestVerifyCommand: a flipped byte is reported with a non-zero exit
// status; --repair removes it; the next verify exits 0.
func TestVerifyCommand(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	layer, _ := seedCache(t, root)
	if out, err := runOut(t, "verify", "--root", root, "--log-level", "error"); err != nil {
		t.Fatalf("clean cache: %v\n%s", err, out)
	}
	p := filepath.Join(root, filepath.FromSlash(storage.BlobDataPath(layer)))
	if err := os.WriteFile(p, []byte("layer bytes of a cached imagE"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := runOut(t, "verify", "--root", root, "--log-level", "error")
	var ee exitError
	if !errors.As(err, &ee) || ee.code != 1 || !strings.Contains(out, "does not match its digest") {
		t.Fatalf("corrupt blob: err %v, output:\n%s", err, out)
	}
	out, err = runOut(t, "verify", "--repair", "--root", root, "--log-level", "error")
	if !errors.As(err, &ee) || !strings.Contains(out, "(removed)") || !strings.Contains(out, "1 removed") {
		t.Fatalf("repair: err %v, output:\n%s", err, out)
	}
	if out, err := runOut(t, "verify", "--root", root, "--log-level", "error"); err != nil {
		t.Fatalf("after repair: %v\n%s", err, out)
	}
}

// TestVerifyCommandNotes: what an interrupted tag write left (a time
// record without a current link, an older version's leftover on the
// filesystem; the same on object storage) is a "note:" line and exit
// status 0; --repair removes it once it is old, and not before.
func TestVerifyCommandNotes(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	_, manifest := seedCache(t, root)
	s, err := storage.NewFilesystem(root)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.TouchTag(t.Context(), "docker.io/library/app", "half", manifest, time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	record := filepath.Join(root, filepath.FromSlash(storage.TagFetchedPath("docker.io/library/app", "half")))
	out, err := runOut(t, "verify", "--repair", "--root", root, "--log-level", "error")
	if err != nil || !strings.Contains(out, "note: tag ") || !strings.Contains(out, "0 problems, 1 notes") || strings.Contains(out, "(removed)") {
		t.Fatalf("a young leftover: err %v, output:\n%s", err, out)
	}
	old := time.Now().Add(-time.Hour)
	if err := os.Chtimes(record, old, old); err != nil {
		t.Fatal(err)
	}
	out, err = runOut(t, "verify", "--repair", "--root", root, "--log-level", "error")
	if err != nil || !strings.Contains(out, "(removed)") || !strings.Contains(out, "1 removed") {
		t.Fatalf("an old leftover: err %v, output:\n%s", err, out)
	}
	if _, err := os.Stat(filepath.Dir(record)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the leftover is still there: %v", err)
	}
	if out, err := runOut(t, "verify", "--root", root, "--log-level", "error"); err != nil || strings.Contains(out, "note:") {
		t.Fatalf("after repair: %v\n%s", err, out)
	}
}

// TestGCCommand: a dry run prints what would go and removes nothing; the
// real run removes an old unreferenced layer and keeps the tagged image.
func TestGCCommand(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	layer, manifest := seedCache(t, root)
	s, err := storage.NewFilesystem(root)
	if err != nil {
		t.Fatal(err)
	}
	loose := digest.FromString("loose")
	st, err := s.NewStaging(loose)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.File.WriteString("loose"); err != nil {
		t.Fatal(err)
	}
	if err := s.CommitBlob(t.Context(), loose, st); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-time.Hour)
	p := filepath.Join(root, filepath.FromSlash(storage.BlobDataPath(loose)))
	if err := os.Chtimes(p, old, old); err != nil {
		t.Fatal(err)
	}
	out, err := runOut(t, "gc", "--dry-run", "--root", root, "--log-level", "error")
	if err != nil || !strings.Contains(out, "would remove blob "+loose.String()) || !strings.Contains(out, "gc: would remove 1 blobs") {
		t.Fatalf("dry run: %v\n%s", err, out)
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatal("the dry run removed the blob")
	}
	out, err = runOut(t, "gc", "--root", root, "--log-level", "error")
	if err != nil || !strings.Contains(out, "removed blob "+loose.String()) || !strings.Contains(out, "gc: removed 1 blobs") {
		t.Fatalf("gc: %v\n%s", err, out)
	}
	for _, d := range []digest.Digest{layer, manifest} {
		if _, err := os.Stat(filepath.Join(root, filepath.FromSlash(storage.BlobDataPath(d)))); err != nil {
			t.Errorf("tagged content %s removed: %v", d, err)
		}
	}
}

// TestMaintenanceBesideARunningServer: gc and verify on the root a server
// is serving from: they leave the server's staging alone, keep the tagged
// image, and the server keeps answering.
func TestMaintenanceBesideARunningServer(t *testing.T) {
	root := filepath.Join(t.TempDir(), "cache")
	addr := startServe(t, "--root", root, "--log-level", "error")
	layer, manifest := seedCache(t, root)
	if out, err := runOut(t, "gc", "--root", root, "--log-level", "error"); err != nil || !strings.Contains(out, "gc: removed 0 blobs") {
		t.Fatalf("gc beside a server: %v\n%s", err, out)
	}
	if out, err := runOut(t, "verify", "--root", root, "--log-level", "error"); err != nil {
		t.Fatalf("verify beside a server: %v\n%s", err, out)
	}
	for _, d := range []digest.Digest{layer, manifest} {
		if _, err := os.Stat(filepath.Join(root, filepath.FromSlash(storage.BlobDataPath(d)))); err != nil {
			t.Errorf("%s removed: %v", d, err)
		}
	}
	entries, err := os.ReadDir(filepath.Join(root, "stowage", "staging"))
	if err != nil || len(entries) != 2 {
		t.Errorf("the server's staging directory and lock: %v %v", entries, err)
	}
	resp, err := http.Get("http://" + addr + "/v2/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
}
