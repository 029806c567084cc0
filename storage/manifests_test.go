package storage_test

import (
	"context"
	"errors"
	"io"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	driver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/distribution/distribution/v3/registry/storage/driver/inmemory"
	"github.com/opencontainers/go-digest"

	"github.com/stowage/stowage/storage"
)

// faultyDriver fails PutContent on paths with a given suffix (a full disk
// at the wrong moment) and counts blob data bytes read.
type faultyDriver struct {
	driver.StorageDriver
	failSuffix string
	read       atomic.Int64
}

func (d *faultyDriver) PutContent(ctx context.Context, p string, b []byte) error {
	if d.failSuffix != "" && strings.HasSuffix(p, d.failSuffix) {
		return syscall.ENOSPC
	}
	return d.StorageDriver.PutContent(ctx, p, b)
}

func (d *faultyDriver) GetContent(ctx context.Context, p string) ([]byte, error) {
	b, err := d.StorageDriver.GetContent(ctx, p)
	if strings.HasSuffix(p, "/data") {
		d.read.Add(int64(len(b)))
	}
	return b, err
}

func (d *faultyDriver) Reader(ctx context.Context, p string, off int64) (io.ReadCloser, error) {
	rc, err := d.StorageDriver.Reader(ctx, p, off)
	if err != nil || !strings.HasSuffix(p, "/data") {
		return rc, err
	}
	return &countReader{ReadCloser: rc, n: &d.read}, nil
}

type countReader struct {
	io.ReadCloser
	n *atomic.Int64
}

func (r *countReader) Read(p []byte) (int, error) {
	n, err := r.ReadCloser.Read(p)
	r.n.Add(int64(n))
	return n, err
}

func newFaulty(t *testing.T) (*storage.Store, *faultyDriver) {
	t.Helper()
	d := &faultyDriver{StorageDriver: inmemory.New()}
	s, err := storage.New(d)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s, d
}

// TestPutTagWritesTimeFirst: when the time record cannot be written, no
// link is left behind that would read as a stock registry's tag (local
// content, never revalidated).
func TestPutTagWritesTimeFirst(t *testing.T) {
	t.Parallel()
	s, d := newFaulty(t)
	d.failSuffix = "stowage_fetched_at"
	dg := digest.FromString("m")
	if err := s.PutTag(t.Context(), "docker.io/library/x", "v1", dg, time.Now()); err == nil {
		t.Fatal("PutTag succeeded with a failing time write")
	}
	if tag, err := s.GetTag(t.Context(), "docker.io/library/x", "v1"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("after a failed time write the tag reads as %+v, %v; want not found", tag, err)
	}
}

// TestGetTagUnreadableTime: a corrupt time record is reported, not read as
// "never fetched by Stowage".
func TestGetTagUnreadableTime(t *testing.T) {
	t.Parallel()
	s, d := newFaulty(t)
	dg := digest.FromString("m")
	if err := s.PutTag(t.Context(), "docker.io/library/x", "v1", dg, time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := d.StorageDriver.PutContent(t.Context(), storage.TagFetchedPath("docker.io/library/x", "v1"), []byte("garbage")); err != nil {
		t.Fatal(err)
	}
	tag, err := s.GetTag(t.Context(), "docker.io/library/x", "v1")
	if err != nil || !tag.TimeUnreadable || !tag.FetchedAt.IsZero() {
		t.Fatalf("corrupt time: %+v, %v", tag, err)
	}
}

// TestReadManifestCapped: content over the cap is refused before any byte
// is read, also through GetManifestAny; corrupt bytes are ErrCorrupt.
func TestReadManifestCapped(t *testing.T) {
	t.Parallel()
	s, d := newFaulty(t)
	big := make([]byte, storage.DefaultMaxManifestSize+1)
	bd := digest.FromBytes(big)
	if err := d.StorageDriver.PutContent(t.Context(), storage.BlobDataPath(bd), big); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetManifestAny(t.Context(), bd); !errors.Is(err, storage.ErrTooLarge) {
		t.Fatalf("over the cap: %v", err)
	}
	if _, err := s.ReadManifest(t.Context(), "", bd, 1024); !errors.Is(err, storage.ErrTooLarge) {
		t.Fatalf("over a 1 KiB cap: %v", err)
	}
	if n := d.read.Load(); n != 0 {
		t.Fatalf("read %d bytes of content over the cap", n)
	}
	body := []byte(`{"schemaVersion":2}`)
	md := digest.FromBytes(body)
	if err := s.PutManifest(t.Context(), "docker.io/library/x", md, body); err != nil {
		t.Fatal(err)
	}
	if err := d.StorageDriver.PutContent(t.Context(), storage.BlobDataPath(md), []byte(`{"schemaVersion":3}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetManifest(t.Context(), "docker.io/library/x", md); !errors.Is(err, storage.ErrCorrupt) {
		t.Fatalf("corrupt: %v", err)
	}
	if err := s.PutManifest(t.Context(), "docker.io/library/x", md, body); err != nil {
		t.Fatal(err)
	}
	if got, err := s.GetManifest(t.Context(), "docker.io/library/x", md); err != nil || string(got) != string(body) {
		t.Fatalf("after PutManifest repaired it: %q, %v", got, err)
	}
}
