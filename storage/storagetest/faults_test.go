package storagetest_test

import (
	"testing"
	"testing/synctest"
	"time"

	driver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/opencontainers/go-digest"

	"github.com/stowage/stowage/storage"
	"github.com/stowage/stowage/storage/storagetest"
)

// TestFaultDriverSlowCommit: a Delay fault holds the write until the
// (fake) clock passes it, then lets it through; Count limits it to one.
func TestFaultDriverSlowCommit(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var fd *storagetest.FaultDriver
		s, err := storage.NewFilesystem(t.TempDir(), storage.WithDriverWrapper(func(d driver.StorageDriver) driver.StorageDriver {
			fd = storagetest.NewFaultDriver(d)
			return fd
		}))
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		for _, c := range []string{"x", "y"} {
			commitBlob(t, s, c) // a link needs its blob
		}
		fd.Inject(storagetest.Fault{Op: storagetest.OpCommit, Path: "/stowage/staging/", Delay: time.Minute, Count: 1})
		done := make(chan error, 1)
		go func() { done <- s.LinkBlob(t.Context(), "team/x", digest.FromString("x")) }()
		synctest.Wait()
		select {
		case err := <-done:
			t.Fatalf("write returned during the delay: %v", err)
		default:
		}
		time.Sleep(time.Minute)
		synctest.Wait()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if err := s.LinkBlob(t.Context(), "team/y", digest.FromString("y")); err != nil {
			t.Fatal(err) // Count 1: not delayed again
		}
		if n := fd.Calls(storagetest.OpCommit); n != 2 {
			t.Fatalf("commits seen: %d", n)
		}
	})
}

func commitBlob(t *testing.T, s *storage.Store, content string) {
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
}
