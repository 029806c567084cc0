package storage_test

import (
	"errors"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/stowage/stowage/storage"
)

func TestPins(t *testing.T) {
	t.Parallel()
	backends := map[string]func(t *testing.T) *storage.Store{
		"filesystem": func(t *testing.T) *storage.Store {
			s, err := storage.NewFilesystem(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			return s
		},
		"inmemory": func(t *testing.T) *storage.Store {
			s, err := storage.NewInMemory()
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = s.Close() })
			return s
		},
	}
	for name, open := range backends {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			s := open(t)
			ctx := t.Context()
			if pins, err := s.Pins(ctx); err != nil || len(pins) != 0 {
				t.Fatalf("empty store: %v %v", pins, err)
			}
			a, b, c := digest.FromString("a"), digest.FromString("b"), digest.FromString("c")
			p1 := storage.Pin{Name: "images-list.txt", Updated: time.Unix(100, 0),
				Images: []storage.PinnedImage{{Repository: "docker.io/library/x", Tag: "1", Digest: a}},
				Blobs:  []digest.Digest{b, a, b}}
			if err := s.PutPin(ctx, p1); err != nil {
				t.Fatal(err)
			}
			if err := s.PutPin(ctx, storage.Pin{Name: "other", Blobs: []digest.Digest{c}}); err != nil {
				t.Fatal(err)
			}
			pins, err := s.Pins(ctx)
			if err != nil || len(pins) != 2 || pins[0].Name != "images-list.txt" || pins[1].Name != "other" {
				t.Fatalf("pins: %+v %v", pins, err)
			}
			if got := pins[0].Blobs; len(got) != 2 || !pins[0].Contains(a) || !pins[0].Contains(b) || pins[0].Contains(c) {
				t.Fatalf("blobs not sorted/unique: %v", got)
			}
			if pins[0].Images[0].Digest != a || !pins[0].Updated.Equal(time.Unix(100, 0)) {
				t.Fatalf("pin round trip: %+v", pins[0])
			}
			all, err := s.PinnedBlobs(ctx)
			if err != nil || len(all) != 3 {
				t.Fatalf("pinned blobs: %v %v", all, err)
			}
			// Replacing a pin drops what it no longer names.
			if err := s.PutPin(ctx, storage.Pin{Name: "other", Blobs: []digest.Digest{a}}); err != nil {
				t.Fatal(err)
			}
			if all, _ := s.PinnedBlobs(ctx); all[c] {
				t.Fatal("replaced pin still keeps c")
			}
			if err := s.DeletePin(ctx, "other"); err != nil {
				t.Fatal(err)
			}
			if err := s.DeletePin(ctx, "other"); err != nil {
				t.Fatalf("second delete: %v", err)
			}
			if _, err := s.GetPin(ctx, "other"); !errors.Is(err, storage.ErrNotFound) {
				t.Fatalf("deleted pin: %v", err)
			}
		})
	}
}

func TestPinInvalid(t *testing.T) {
	t.Parallel()
	s, err := storage.NewInMemory()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	for _, p := range []storage.Pin{
		{Name: ""},
		{Name: "../escape"},
		{Name: "a/b"},
		{Name: ".hidden"},
		{Name: "ok", Blobs: []digest.Digest{"sha256:short"}},
	} {
		if err := s.PutPin(t.Context(), p); !errors.Is(err, storage.ErrInvalidPin) {
			t.Errorf("%+v: %v", p, err)
		}
	}
}
