package storage_test

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	driver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/distribution/distribution/v3/registry/storage/driver/inmemory"
	"github.com/opencontainers/go-digest"

	"github.com/stowage/stowage/storage"
)

// TestTagRecordNamesItsDigest: a time record is the current link's only
// when it names that digest (or, written by an older version, names
// none); a confirmation of another digest reads as stale.
func TestTagRecordNamesItsDigest(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	raw := inmemory.New()
	s, err := storage.New(raw)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	const repo = "docker.io/library/x"
	d1, d2 := digest.FromString("one"), digest.FromString("two")
	at := time.Date(2026, 11, 30, 1, 0, 0, 0, time.UTC)
	if err := s.PutTag(ctx, repo, "v1", d1, at); err != nil {
		t.Fatal(err)
	}
	if b, err := raw.GetContent(ctx, storage.TagFetchedPath(repo, "v1")); err != nil || string(b) != "2026-11-30T01:00:00Z "+d1.String() {
		t.Fatalf("record %q, %v", b, err)
	}
	for _, c := range []struct {
		name   string
		record string
		want   storage.Tag
	}{
		{"its digest", "2026-11-30T02:00:00Z " + d1.String(), storage.Tag{Digest: d1, FetchedAt: at.Add(time.Hour)}},
		{"another digest", "2026-11-30T02:00:00Z " + d2.String(), storage.Tag{Digest: d1, TimeUnreadable: true}},
		{"an older version's", "2026-11-30T03:00:00Z", storage.Tag{Digest: d1, FetchedAt: at.Add(2 * time.Hour)}},
		{"not a digest", "2026-11-30T03:00:00Z sha256:zz", storage.Tag{Digest: d1, TimeUnreadable: true}},
		{"three fields", "2026-11-30T03:00:00Z " + d1.String() + " x", storage.Tag{Digest: d1, TimeUnreadable: true}},
		{"zero time", "0001-01-01T00:00:00Z " + d1.String(), storage.Tag{Digest: d1, TimeUnreadable: true}},
	} {
		if err := raw.PutContent(ctx, storage.TagFetchedPath(repo, "v1"), []byte(c.record)); err != nil {
			t.Fatal(err)
		}
		got, err := s.GetTag(ctx, repo, "v1")
		if err != nil || got.Digest != c.want.Digest || !got.FetchedAt.Equal(c.want.FetchedAt) || got.TimeUnreadable != c.want.TimeUnreadable {
			t.Errorf("%s (%q): %+v, %v; want %+v", c.name, c.record, got, err, c.want)
		}
	}
	// A revalidation that confirmed d2 while the tag moved to d1 meanwhile.
	if err := s.TouchTag(ctx, repo, "v1", d2, at.Add(3*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.GetTag(ctx, repo, "v1"); !got.TimeUnreadable || !got.FetchedAt.IsZero() {
		t.Errorf("after a confirmation of another digest: %+v, want stale", got)
	}
	if err := s.TouchTag(ctx, repo, "v1", d1, at.Add(4*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.GetTag(ctx, repo, "v1"); got.TimeUnreadable || !got.FetchedAt.Equal(at.Add(4*time.Hour)) {
		t.Errorf("after a confirmation of its digest: %+v", got)
	}
	if err := s.PutTag(ctx, repo, "v1", "sha256:nope", at); err == nil {
		t.Error("PutTag with an invalid digest succeeded")
	}
	if err := s.TouchTag(ctx, repo, "v1", "", at); err == nil {
		t.Error("TouchTag without a digest succeeded")
	}
}

// TestInterruptedTagWritesAreNotes runs checkInterruptedTags on the
// inmemory driver (object storage's behaviour: no directories to rename;
// TestS3 runs it on a real S3 server).
func TestInterruptedTagWritesAreNotes(t *testing.T) {
	t.Parallel()
	checkInterruptedTags(t, inmemory.New())
}

// checkInterruptedTags: on a driver without directories a tag is three
// writes (time record, index entry, current link). A process killed
// after the record of a new tag leaves a tag without a current link; one
// killed after the record of a retag leaves the old link beside the new
// digest's record. Neither is corruption: verify reports them as notes
// (exit status 0), the tag without a link is not found or listed and the
// next PutTag completes it, the retag reads as stale. --repair removes the
// link-less tag once its record is older than InterruptedAge, and never a
// younger one (a write in progress).
func checkInterruptedTags(t *testing.T, raw driver.StorageDriver) {
	t.Helper()
	ctx := t.Context()
	const repo = "docker.io/library/app"
	body := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}`)
	old, moved := digest.FromBytes(body), digest.FromString("the new manifest")
	at := time.Date(2026, 11, 30, 1, 0, 0, 0, time.UTC)
	s, err := storage.New(raw)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.PutManifest(ctx, repo, old, body); err != nil {
		t.Fatal(err)
	}
	if err := s.PutTag(ctx, repo, "moving", old, at); err != nil {
		t.Fatal(err)
	}
	dying, err := storage.New(newDying(raw, 2))
	if err != nil {
		t.Fatal(err)
	}
	defer dying.Close()
	if err := dying.PutTag(ctx, repo, "fresh", old, at); !errors.Is(err, errKilled) {
		t.Fatalf("PutTag of a new tag: %v, want the kill after the record", err)
	}
	dying, err = storage.New(newDying(raw, 2))
	if err != nil {
		t.Fatal(err)
	}
	defer dying.Close()
	if err := dying.PutTag(ctx, repo, "moving", moved, at.Add(time.Hour)); !errors.Is(err, errKilled) {
		t.Fatalf("PutTag of a retag: %v, want the kill after the record", err)
	}

	if _, err := s.GetTag(ctx, repo, "fresh"); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("the interrupted new tag: %v, want not found", err)
	}
	if tags, err := s.Tags(ctx, repo); err != nil || !slices.Equal(tags, []string{"moving"}) {
		t.Errorf("tags %v, %v; want only the tag with a current link", tags, err)
	}
	if got, err := s.GetTag(ctx, repo, "moving"); err != nil || got.Digest != old || !got.TimeUnreadable {
		t.Errorf("the interrupted retag: %+v, %v; want the old digest, stale", got, err)
	}

	verify := func(opts storage.VerifyOptions) storage.VerifyResult {
		t.Helper()
		res, err := s.Verify(ctx, opts)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range res.Problems {
			t.Errorf("verify (repair %v, age %s): problem %s; notes %v", opts.Repair, opts.InterruptedAge, p, res.Notes)
		}
		return res
	}
	res := verify(storage.VerifyOptions{Repair: true})
	if len(res.Notes) != 2 || slices.ContainsFunc(res.Notes, func(p storage.Problem) bool { return p.Repaired || !p.Note }) {
		t.Errorf("notes with --repair on a young leftover: %v; want two, nothing removed", res.Notes)
	}
	for _, n := range res.Notes {
		if !strings.HasPrefix(n.String(), "note: tag ") {
			t.Errorf("note printed as %q", n)
		}
	}
	res = verify(storage.VerifyOptions{Repair: true, InterruptedAge: time.Nanosecond})
	removed := 0
	for _, n := range res.Notes {
		if n.Repaired {
			removed++
			if !strings.HasSuffix(n.Path, "/tags/fresh") {
				t.Errorf("removed %s", n)
			}
		}
	}
	if len(res.Notes) != 2 || removed != 1 {
		t.Errorf("notes with --repair on an old leftover: %v; want the link-less tag removed", res.Notes)
	}
	if res := verify(storage.VerifyOptions{}); len(res.Notes) != 1 {
		t.Errorf("after the repair: %v; want only the retag's note", res.Notes)
	}
	// The next pull writes both tags whole.
	if err := s.PutTag(ctx, repo, "fresh", old, at.Add(2*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := s.PutTag(ctx, repo, "moving", old, at.Add(2*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if res := verify(storage.VerifyOptions{}); len(res.Notes) != 0 {
		t.Errorf("after the tags were written again: %v", res.Notes)
	}
	for _, tag := range []string{"fresh", "moving"} {
		if got, err := s.GetTag(ctx, repo, tag); err != nil || got.Digest != old || !got.FetchedAt.Equal(at.Add(2*time.Hour)) {
			t.Errorf("%s: %+v, %v", tag, got, err)
		}
	}
}

// TestFilesystemLeftoverTagIsANote: a tag directory with a time record
// and no current link on the filesystem (what versions before whole-tag
// renames left after a kill) is a note too, and PutTag completes it.
func TestFilesystemLeftoverTagIsANote(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	root := t.TempDir()
	s := newFS(t, root)
	const repo = "docker.io/library/app"
	body := []byte(`{"schemaVersion":2}`)
	d := digest.FromBytes(body)
	if err := s.PutManifest(ctx, repo, d, body); err != nil {
		t.Fatal(err)
	}
	if err := s.TouchTag(ctx, repo, "left", d, time.Now()); err != nil {
		t.Fatal(err)
	}
	res, err := s.Verify(ctx, storage.VerifyOptions{})
	if err != nil || len(res.Problems) != 0 || len(res.Notes) != 1 {
		t.Fatalf("verify: %v, problems %v, notes %v", err, res.Problems, res.Notes)
	}
	if tags, err := s.Tags(ctx, repo); err != nil || len(tags) != 0 {
		t.Errorf("tags %v, %v; want none", tags, err)
	}
	at := time.Date(2026, 11, 30, 1, 0, 0, 0, time.UTC)
	if err := s.PutTag(ctx, repo, "left", d, at); err != nil {
		t.Fatal(err)
	}
	if got, err := s.GetTag(ctx, repo, "left"); err != nil || got.Digest != d || !got.FetchedAt.Equal(at) {
		t.Errorf("completed: %+v, %v", got, err)
	}
	if res, err := s.Verify(ctx, storage.VerifyOptions{}); err != nil || len(res.Problems)+len(res.Notes) != 0 {
		t.Errorf("verify after PutTag: %v %v %v", err, res.Problems, res.Notes)
	}
}
