package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/stowage/stowage/storage"
	"github.com/stowage/stowage/storage/usage"
)

// TestStatsCommand: sizes, objects, pinned bytes and both rankings, as
// JSON and as text, on a cache directory with two repositories, a pin and
// an access record.
func TestStatsCommand(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	layer, manifest := seedCache(t, root)
	s, err := storage.NewFilesystem(root)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	big := []byte(strings.Repeat("x", 1000))
	bigD := digest.FromBytes(big)
	st, err := s.NewStaging(bigD)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.File.Write(big); err != nil {
		t.Fatal(err)
	}
	if err := s.CommitBlob(ctx, bigD, st); err != nil {
		t.Fatal(err)
	}
	if err := s.LinkBlob(ctx, "docker.io/library/big", bigD); err != nil {
		t.Fatal(err)
	}
	if err := s.PutPin(ctx, storage.Pin{Name: "base", Updated: time.Now(), Blobs: []digest.Digest{layer, manifest}}); err != nil {
		t.Fatal(err)
	}
	used := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	if err := s.PutRecord(ctx, usage.AccessKind, "d-test", fmt.Appendf(nil, "%s %d\n", layer, used.Unix())); err != nil {
		t.Fatal(err)
	}
	_ = s.Close()

	out, err := runOut(t, "stats", "--root", root, "--json", "--log-level", "error")
	if err != nil {
		t.Fatalf("stats: %v\n%s", err, out)
	}
	var got cacheStats
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("stats --json: %v\n%s", err, out)
	}
	manifestSize := int64(len(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","layers":[{"digest":"` + layer.String() + `","size":29}]}`))
	const layerSize = 29
	if got.Bytes != layerSize+manifestSize+1000 || got.Objects != 3 {
		t.Errorf("bytes %d objects %d, want %d and 3", got.Bytes, got.Objects, layerSize+manifestSize+1000)
	}
	if got.PinnedBytes != layerSize+manifestSize || got.PinnedObjects != 2 || got.Pins != 1 {
		t.Errorf("pinned %d bytes, %d objects, %d pins; want %d, 2, 1", got.PinnedBytes, got.PinnedObjects, got.Pins, layerSize+manifestSize)
	}
	if got.Repositories != 2 || len(got.TopBySize) != 2 || got.TopBySize[0].Repo != "docker.io/library/big" ||
		got.TopBySize[1].Bytes != layerSize+manifestSize || got.TopBySize[1].Blobs != 2 {
		t.Errorf("by size: %+v", got.TopBySize)
	}
	if len(got.TopByUse) != 1 || got.TopByUse[0].Repo != "docker.io/library/app" || !got.TopByUse[0].LastUsed.Equal(used) {
		t.Errorf("by use: %+v", got.TopByUse)
	}

	text, err := runOut(t, "stats", "--root", root, "--top", "1", "--log-level", "error")
	if err != nil {
		t.Fatalf("stats: %v", err)
	}
	for _, want := range []string{"pinned", "(1 pins)", "docker.io/library/big", "2026-11-01T12:00:00Z"} {
		if !strings.Contains(text, want) {
			t.Errorf("text output lacks %q:\n%s", want, text)
		}
	}
}
