// Package storagetest is the conformance suite every Store backend must
// pass: run Run against a fresh Store of each driver.
package storagetest

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/stowage/stowage/storage"
)

// Run exercises a fresh, empty Store built by newStore.
func Run(t *testing.T, newStore func(t *testing.T) *storage.Store) {
	t.Run("BlobLifecycle", func(t *testing.T) { t.Parallel(); testBlobLifecycle(t, newStore(t)) })
	t.Run("DiscardedStagingLeavesNothing", func(t *testing.T) { t.Parallel(); testDiscard(t, newStore(t)) })
	t.Run("Manifests", func(t *testing.T) { t.Parallel(); testManifests(t, newStore(t)) })
	t.Run("Tags", func(t *testing.T) { t.Parallel(); testTags(t, newStore(t)) })
	t.Run("Repositories", func(t *testing.T) { t.Parallel(); testRepositories(t, newStore(t)) })
	t.Run("Referrers", func(t *testing.T) { t.Parallel(); testReferrers(t, newStore(t)) })
	t.Run("Records", func(t *testing.T) { t.Parallel(); testRecords(t, newStore(t)) })
}

func stage(t *testing.T, s *storage.Store, data []byte) (digest.Digest, *storage.Staging) {
	t.Helper()
	d := digest.FromBytes(data)
	st, err := s.NewStaging(d)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.File.Write(data); err != nil {
		t.Fatal(err)
	}
	return d, st
}

func testBlobLifecycle(t *testing.T, s *storage.Store) {
	ctx := context.Background()
	data := bytes.Repeat([]byte("stowage"), 100000)
	d, st := stage(t, s, data)
	if _, err := s.StatBlob(ctx, d); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("staged blob visible before commit: %v", err)
	}
	if err := s.CommitBlob(ctx, d, st); err != nil {
		t.Fatal(err)
	}
	_ = st.File.Close()
	info, err := s.StatBlob(ctx, d)
	if err != nil || info.Size != int64(len(data)) {
		t.Fatalf("stat %+v %v", info, err)
	}
	rs, _, err := s.OpenBlob(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	defer rs.Close()
	if _, err := rs.Seek(7, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(rs)
	if err != nil || !bytes.Equal(got, data[7:]) {
		t.Fatalf("read after seek: %d bytes, %v", len(got), err)
	}
	if end, err := rs.Seek(0, io.SeekEnd); err != nil || end != int64(len(data)) {
		t.Fatalf("seek end %d %v", end, err)
	}
	if ok, err := s.BlobLinked(ctx, "docker.io/library/a", d); err != nil || ok {
		t.Fatalf("linked before LinkBlob: %v %v", ok, err)
	}
	if err := s.LinkBlob(ctx, "docker.io/library/a", d); err != nil {
		t.Fatal(err)
	}
	if ok, err := s.BlobLinked(ctx, "docker.io/library/a", d); err != nil || !ok {
		t.Fatalf("not linked after LinkBlob: %v %v", ok, err)
	}
	if _, _, err := s.OpenBlob(ctx, digest.FromString("absent")); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("absent blob: %v", err)
	}
}

func testDiscard(t *testing.T, s *storage.Store) {
	ctx := context.Background()
	d, st := stage(t, s, []byte("half a blob"))
	if err := st.Discard(); err != nil {
		t.Fatal(err)
	}
	_ = st.File.Close()
	if _, err := s.StatBlob(ctx, d); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("discarded blob visible: %v", err)
	}
	if err := s.CleanStaging(ctx); err != nil {
		t.Fatal(err)
	}
}

func testManifests(t *testing.T, s *storage.Store) {
	ctx := context.Background()
	body := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{},"layers":[]}`)
	d := digest.FromBytes(body)
	if _, err := s.GetManifest(ctx, "ghcr.io/o/a", d); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("absent manifest: %v", err)
	}
	if err := s.PutManifest(ctx, "ghcr.io/o/a", d, body); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetManifest(ctx, "ghcr.io/o/a", d)
	if err != nil || !bytes.Equal(got, body) {
		t.Fatalf("get manifest: %v", err)
	}
	if _, err := s.GetManifest(ctx, "ghcr.io/o/other", d); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("manifest visible in a repository it was not linked to: %v", err)
	}
	if got, err := s.GetManifestAny(ctx, d); err != nil || !bytes.Equal(got, body) {
		t.Fatalf("get any: %v", err)
	}
}

func testTags(t *testing.T, s *storage.Store) {
	ctx := context.Background()
	d1, d2 := digest.FromString("one"), digest.FromString("two")
	at := time.Date(2026, 3, 4, 5, 6, 7, 8, time.UTC)
	if _, err := s.GetTag(ctx, "docker.io/library/x", "v1"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("absent tag: %v", err)
	}
	if err := s.PutTag(ctx, "docker.io/library/x", "v1", d1, at); err != nil {
		t.Fatal(err)
	}
	if err := s.PutTag(ctx, "docker.io/library/x", "v1", d2, at.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	tag, err := s.GetTag(ctx, "docker.io/library/x", "v1")
	if err != nil || tag.Digest != d2 || !tag.FetchedAt.Equal(at.Add(time.Hour)) {
		t.Fatalf("tag %+v %v", tag, err)
	}
	if err := s.TouchTag(ctx, "docker.io/library/x", "v1", d2, at.Add(2*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if tag, _ := s.GetTag(ctx, "docker.io/library/x", "v1"); !tag.FetchedAt.Equal(at.Add(2 * time.Hour)) {
		t.Fatalf("touch: %v", tag.FetchedAt)
	}
	if err := s.PutTag(ctx, "docker.io/library/x", "a0", d1, at); err != nil {
		t.Fatal(err)
	}
	tags, err := s.Tags(ctx, "docker.io/library/x")
	if err != nil || len(tags) != 2 || tags[0] != "a0" || tags[1] != "v1" {
		t.Fatalf("tags %v %v", tags, err)
	}
}

func testRepositories(t *testing.T, s *storage.Store) {
	ctx := context.Background()
	if repos, err := s.Repositories(ctx); err != nil || len(repos) != 0 {
		t.Fatalf("empty store: %v %v", repos, err)
	}
	body := []byte(`{"schemaVersion":2}`)
	for _, r := range []string{"quay.io/b/c", "docker.io/library/a", "docker.io/x/y/z"} {
		if err := s.PutManifest(ctx, r, digest.FromBytes(body), body); err != nil {
			t.Fatal(err)
		}
	}
	repos, err := s.Repositories(ctx)
	want := []string{"docker.io/library/a", "docker.io/x/y/z", "quay.io/b/c"}
	if err != nil || len(repos) != len(want) {
		t.Fatalf("repositories %v %v", repos, err)
	}
	for i := range want {
		if repos[i] != want[i] {
			t.Fatalf("repositories %v, want %v", repos, want)
		}
	}
}

func testReferrers(t *testing.T, s *storage.Store) {
	ctx := context.Background()
	d := digest.FromString("subject")
	if _, err := s.GetReferrers(ctx, "r/x", d, ""); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("absent referrers: %v", err)
	}
	if err := s.PutReferrers(ctx, "r/x", d, "", []byte("all")); err != nil {
		t.Fatal(err)
	}
	if err := s.PutReferrers(ctx, "r/x", d, "application/vnd.example+json", []byte("typed")); err != nil {
		t.Fatal(err)
	}
	if b, err := s.GetReferrers(ctx, "r/x", d, ""); err != nil || string(b) != "all" {
		t.Fatalf("all: %s %v", b, err)
	}
	if b, err := s.GetReferrers(ctx, "r/x", d, "application/vnd.example+json"); err != nil || string(b) != "typed" {
		t.Fatalf("typed: %s %v", b, err)
	}
}

func testRecords(t *testing.T, s *storage.Store) {
	ctx := context.Background()
	if recs, err := s.Records(ctx, "jobs"); err != nil || len(recs) != 0 {
		t.Fatalf("no records yet: %v %v", recs, err)
	}
	for name, data := range map[string]string{"a1": "one", "b2": "two"} {
		if err := s.PutRecord(ctx, "jobs", name, []byte(data)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.PutRecord(ctx, "jobs", "a1", []byte("one again")); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteRecord(ctx, "jobs", "b2"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteRecord(ctx, "jobs", "never"); err != nil {
		t.Fatalf("deleting a missing record: %v", err)
	}
	recs, err := s.Records(ctx, "jobs")
	if err != nil || len(recs) != 1 || string(recs["a1"]) != "one again" {
		t.Fatalf("records: %q %v", recs, err)
	}
	for _, bad := range [][2]string{{"jobs", "../pins"}, {"jobs", ""}, {"Jobs", "x"}, {"../x", "y"}, {"jobs", "a.tmp"}} {
		if err := s.PutRecord(ctx, bad[0], bad[1], nil); !errors.Is(err, storage.ErrInvalidRecord) {
			t.Errorf("PutRecord(%q, %q) = %v, want ErrInvalidRecord", bad[0], bad[1], err)
		}
	}
}
