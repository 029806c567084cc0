package storage_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/stowage/stowage/storage"
	"github.com/stowage/stowage/storage/storagetest"
)

func TestFilesystemConformance(t *testing.T) {
	t.Parallel()
	storagetest.Run(t, func(t *testing.T) *storage.Store {
		s, err := storage.NewFilesystem(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		return s
	})
}

func TestInMemoryConformance(t *testing.T) {
	t.Parallel()
	storagetest.Run(t, func(t *testing.T) *storage.Store {
		s, err := storage.NewInMemory()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		return s
	})
}

// TestCleanStagingRemovesLeftovers: a fill interrupted by a crash leaves a
// staging file; start-up removes it and it never becomes visible.
func TestCleanStagingRemovesLeftovers(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	s, err := storage.NewFilesystem(root)
	if err != nil {
		t.Fatal(err)
	}
	d := digest.FromString("partial")
	st, err := s.NewStaging(d)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = st.File.Write([]byte("part"))
	_ = st.File.Close() // the process "crashes" here
	if err := s.CleanStaging(context.Background()); err != nil {
		t.Fatal(err)
	}
	left, err := os.ReadDir(filepath.Join(root, "stowage", "staging"))
	if err != nil || len(left) != 0 {
		t.Fatalf("staging after clean: %v %v", left, err)
	}
	if _, err := s.StatBlob(context.Background(), d); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("partial blob visible: %v", err)
	}
}
