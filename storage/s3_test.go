package storage_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/distribution/distribution/v3/registry/storage/driver/s3-aws"

	"github.com/stowage/stowage/storage"
	"github.com/stowage/stowage/storage/storagetest"
)

// rootFor is a distinct root directory in the bucket per (sub)test.
func rootFor(t *testing.T) string {
	return "/" + strings.NewReplacer("/", "-", " ", "_").Replace(t.Name())
}

func newS3Store(t *testing.T, srv *storagetest.S3Server, bucket string, opts ...storage.Option) *storage.Store {
	t.Helper()
	s, err := storage.NewS3(t.Context(), srv.DriverParameters(bucket, rootFor(t)), opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// TestS3 runs the Store conformance suite and the object-storage specifics
// on distribution's s3-aws driver against a real S3-compatible server
// (SeaweedFS; one server for all, it takes seconds to start).
func TestS3(t *testing.T) {
	srv := storagetest.StartS3(t)
	bucket := srv.NewBucket(t)

	t.Run("Conformance", func(t *testing.T) {
		storagetest.Run(t, func(t *testing.T) *storage.Store { return newS3Store(t, srv, bucket) })
	})

	// A blob GET answered by redirect: the presigned URL serves the
	// committed bytes to a client that has no credentials.
	t.Run("BlobURL", func(t *testing.T) {
		t.Parallel()
		s := newS3Store(t, srv, bucket, storage.WithRedirect(true))
		data := bytes.Repeat([]byte("presigned "), 50000)
		d := commitBlob(t, s, string(data))
		r := httptest.NewRequest(http.MethodGet, "/v2/library/a/blobs/"+d.String(), nil)
		u, err := s.BlobURL(r, d)
		if err != nil || !strings.HasPrefix(u, srv.Endpoint+"/") {
			t.Fatalf("BlobURL = %q, %v; want a URL on %s", u, err, srv.Endpoint)
		}
		resp, err := http.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		got, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != http.StatusOK || !bytes.Equal(got, data) {
			t.Fatalf("GET presigned URL: %s, %d bytes, %v", resp.Status, len(got), err)
		}
		head := httptest.NewRequest(http.MethodHead, "/v2/library/a/blobs/"+d.String(), nil)
		if u, err := s.BlobURL(head, d); err != nil || u == "" {
			t.Fatalf("BlobURL for HEAD = %q, %v", u, err)
		}
	})

	// Without storage.redirect the proxy streams: no URL.
	t.Run("BlobURLOff", func(t *testing.T) {
		t.Parallel()
		s := newS3Store(t, srv, bucket)
		d := commitBlob(t, s, "streamed")
		r := httptest.NewRequest(http.MethodGet, "/v2/library/a/blobs/"+d.String(), nil)
		if u, err := s.BlobURL(r, d); err != nil || u != "" {
			t.Fatalf("BlobURL without redirect = %q, %v", u, err)
		}
	})

	// A hit streams from one driver reader (one ranged GET to the store),
	// not one request per small read; a Range request starts one reader at
	// its offset.
	t.Run("HitStreamsFromOneReader", func(t *testing.T) {
		t.Parallel()
		d3, err := s3.FromParameters(t.Context(), srv.DriverParameters(bucket, rootFor(t)))
		if err != nil {
			t.Fatal(err)
		}
		fd := storagetest.NewFaultDriver(d3)
		s, err := storage.New(fd)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		data := bytes.Repeat([]byte("0123456789abcdef"), 1<<20) // 16 MiB
		d := commitBlob(t, s, string(data))

		rs, info, err := s.OpenBlob(t.Context(), d)
		if err != nil {
			t.Fatal(err)
		}
		rec := httptest.NewRecorder()
		// As the proxy does: a known type, so ServeContent does not sniff
		// (read 512 bytes, then seek back to 0).
		rec.Header().Set("Content-Type", "application/octet-stream")
		http.ServeContent(rec, httptest.NewRequest(http.MethodGet, "/", nil), "", info.ModTime, rs)
		_ = rs.Close()
		if !bytes.Equal(rec.Body.Bytes(), data) {
			t.Fatalf("served %d bytes, want %d", rec.Body.Len(), len(data))
		}
		if n := fd.Calls(storagetest.OpReader); n != 1 {
			t.Errorf("driver readers opened for one full GET = %d, want 1", n)
		}

		rs, info, err = s.OpenBlob(t.Context(), d)
		if err != nil {
			t.Fatal(err)
		}
		req := httptest.NewRequest(http.MethodGet, "/", nil)
		req.Header.Set("Range", "bytes=1000000-")
		rec = httptest.NewRecorder()
		rec.Header().Set("Content-Type", "application/octet-stream")
		http.ServeContent(rec, req, "", info.ModTime, rs)
		_ = rs.Close()
		if rec.Code != http.StatusPartialContent || !bytes.Equal(rec.Body.Bytes(), data[1000000:]) {
			t.Fatalf("range: %d, %d bytes", rec.Code, rec.Body.Len())
		}
		if n := fd.Calls(storagetest.OpReader); n != 2 {
			t.Errorf("driver readers after a Range GET = %d, want 2", n)
		}
	})

	// A tag write a crash interrupted: notes, not problems (see
	// checkInterruptedTags).
	t.Run("InterruptedTagWrites", func(t *testing.T) {
		t.Parallel()
		d3, err := s3.FromParameters(t.Context(), srv.DriverParameters(bucket, rootFor(t)))
		if err != nil {
			t.Fatal(err)
		}
		checkInterruptedTags(t, d3)
	})

	// Two Stores on one bucket and root directory (two replicas) see each
	// other's commits: the shared cache of a cluster.
	t.Run("SharedBetweenReplicas", func(t *testing.T) {
		t.Parallel()
		a := newS3Store(t, srv, bucket)
		b := newS3Store(t, srv, bucket)
		data := []byte("shared by replicas")
		d := commitBlob(t, a, string(data))
		rs, _, err := b.OpenBlob(context.Background(), d)
		if err != nil {
			t.Fatal(err)
		}
		defer rs.Close()
		if got, err := io.ReadAll(rs); err != nil || !bytes.Equal(got, data) {
			t.Fatalf("replica b read %q, %v", got, err)
		}
	})
}

// The filesystem driver has no URLs to redirect to: BlobURL stays "".
func TestBlobURLFilesystem(t *testing.T) {
	t.Parallel()
	s, err := storage.NewFilesystem(t.TempDir(), storage.WithRedirect(true))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	d := commitBlob(t, s, "local")
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	if u, err := s.BlobURL(r, d); err != nil || u != "" {
		t.Fatalf("BlobURL on the filesystem = %q, %v", u, err)
	}
}
