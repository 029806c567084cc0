package proxy_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/stowage/stowage/proxy/internal/testenv"
	"github.com/stowage/stowage/storage"
)

// TestConcurrentColdPulls: 20 clients ask for one uncached 64 MiB blob at
// once; the upstream serves it exactly once and everyone gets the verified
// bytes.
func TestConcurrentColdPulls(t *testing.T) {
	t.Parallel()
	const size = 64 << 20
	e := newEnv(t, envOptions{})
	d := e.seedBlob("library/big:v1", size, 1)
	e.up.ResetCounts()

	const clients = 20
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for range clients {
		wg.Go(func() {
			resp := e.get(t.Context(), http.MethodGet, "/v2/library/big/blobs/"+d.String(), nil)
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				errs <- errors.New("status " + resp.Status)
				return
			}
			got, n, err := readAllHash(resp.Body)
			if err != nil {
				errs <- err
				return
			}
			if got.String() != d.String() || n != size {
				errs <- errors.New("wrong bytes: " + got.String() + " " + strconv.FormatInt(n, 10))
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := e.up.Count(testenv.BlobGet); n != 1 {
		t.Fatalf("upstream blob GETs = %d, want 1", n)
	}
}

// TestClientDisconnectDoesNotStopFill: the only client leaves halfway; the
// fill completes and commits, and the next client costs no upstream GET.
func TestClientDisconnectDoesNotStopFill(t *testing.T) {
	t.Parallel()
	const size = 16 << 20
	e := newEnv(t, envOptions{})
	d := e.seedBlob("library/half:v1", size, 2)
	e.up.SetFault(testenv.SlowBlobs(256<<10, 5*time.Millisecond))
	e.up.ResetCounts()

	ctx, cancel := context.WithCancel(t.Context())
	resp := e.get(ctx, http.MethodGet, "/v2/library/half/blobs/"+d.String(), nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if _, err := io.CopyN(io.Discard, resp.Body, size/2); err != nil {
		t.Fatal(err)
	}
	cancel()
	resp.Body.Close()

	waitFor(t, "the fill to commit", func() bool {
		_, err := e.store.StatBlob(context.Background(), digest.Digest(d.String()))
		return err == nil
	})
	e.up.SetFault(nil)
	before := e.up.Count(testenv.BlobGet)
	resp = e.get(t.Context(), http.MethodGet, "/v2/library/half/blobs/"+d.String(), nil)
	defer resp.Body.Close()
	got, n, err := readAllHash(resp.Body)
	if err != nil || got.String() != d.String() || n != size {
		t.Fatalf("second client: %v %s %d", err, got, n)
	}
	if after := e.up.Count(testenv.BlobGet); after != before || before != 1 {
		t.Fatalf("upstream blob GETs: %d before, %d after; want 1 and 1", before, after)
	}
}

// TestCorruptUpstream: the upstream serves wrong bytes (right length) for a
// digest. Nothing is committed, no client receives a complete 200, and the
// next request asks the upstream again.
func TestCorruptUpstream(t *testing.T) {
	t.Parallel()
	const size = 4 << 20
	e := newEnv(t, envOptions{})
	d := e.seedBlob("library/bad:v1", size, 3)
	e.up.SetFault(testenv.CorruptBlobs(size))
	e.up.ResetCounts()

	for attempt := 1; attempt <= 2; attempt++ {
		resp := e.get(t.Context(), http.MethodGet, "/v2/library/bad/blobs/"+d.String(), nil)
		got, n, err := readAllHash(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK && err == nil {
			t.Fatalf("attempt %d: complete 200 response (%d bytes, %s) for corrupt upstream bytes", attempt, n, got)
		}
		if got.String() == d.String() {
			t.Fatalf("attempt %d: corrupt upstream yet the digest matched", attempt)
		}
		if _, err := e.store.StatBlob(context.Background(), digest.Digest(d.String())); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("attempt %d: blob committed or store error: %v", attempt, err)
		}
		if c := e.up.Count(testenv.BlobGet); c != attempt {
			t.Fatalf("attempt %d: upstream blob GETs = %d", attempt, c)
		}
	}
	// Once the upstream is healthy again the blob is served and committed.
	e.up.SetFault(nil)
	resp := e.get(t.Context(), http.MethodGet, "/v2/library/bad/blobs/"+d.String(), nil)
	defer resp.Body.Close()
	got, _, err := readAllHash(resp.Body)
	if err != nil || got.String() != d.String() {
		t.Fatalf("after recovery: %v %s", err, got)
	}
}

// noLengthWriter drops Content-Length: the body goes out chunked.
type noLengthWriter struct{ http.ResponseWriter }

func (w noLengthWriter) WriteHeader(code int) {
	w.Header().Del("Content-Length")
	w.ResponseWriter.WriteHeader(code)
}

func (w noLengthWriter) Write(b []byte) (int, error) { return w.ResponseWriter.Write(b) }

// TestUpstreamWithoutLength: an upstream that sends no Content-Length is
// served once the blob is verified, and no descriptor of the fill stays
// open afterwards.
func TestUpstreamWithoutLength(t *testing.T) {
	t.Parallel()
	const size = 2 << 20
	e := newEnv(t, envOptions{})
	d := e.seedBlob("library/nolen:v1", size, 8)
	e.up.SetFault(func(w http.ResponseWriter, r *http.Request, next http.Handler) {
		next.ServeHTTP(noLengthWriter{w}, r)
	})
	resp := e.get(t.Context(), http.MethodGet, "/v2/library/nolen/blobs/"+d.String(), nil)
	got, n, err := readAllHash(resp.Body)
	resp.Body.Close()
	if err != nil || got != d || n != size {
		t.Fatalf("got %d bytes %s: %v", n, got, err)
	}
	waitFor(t, "no open descriptor on the blob", func() bool {
		fds, _ := os.ReadDir("/proc/self/fd")
		for _, fd := range fds {
			if target, err := os.Readlink("/proc/self/fd/" + fd.Name()); err == nil && strings.Contains(target, d.Encoded()) {
				return false
			}
		}
		return true
	})
}

// TestCommitFailureAfterVerification: when the cache cannot take a blob
// (here a directory squats on its data path, so the commit's rename fails),
// the client still receives the complete verified body, nothing is
// committed, and the next pull fetches again.
func TestCommitFailureAfterVerification(t *testing.T) {
	t.Parallel()
	const size = 2 << 20
	e := newEnv(t, envOptions{})
	d := e.seedBlob("library/nocommit:v1", size, 5)
	squat := filepath.Join(e.root, "docker/registry/v2/blobs/sha256", d.Encoded()[:2], d.Encoded(), "data")
	if err := os.MkdirAll(squat, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(squat, "keep"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	for attempt := 1; attempt <= 2; attempt++ {
		resp := e.get(t.Context(), http.MethodGet, "/v2/library/nocommit/blobs/"+d.String(), nil)
		got, n, err := readAllHash(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || err != nil || got != d || n != size {
			t.Fatalf("attempt %d: %d, %d bytes, %s, %v", attempt, resp.StatusCode, n, got, err)
		}
		if c := e.up.Count(testenv.BlobGet); c != attempt {
			t.Fatalf("attempt %d: upstream blob GETs = %d (the blob must not count as cached)", attempt, c)
		}
	}
	if _, err := e.store.StatBlob(context.Background(), d); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("StatBlob with a directory at the data path: %v", err)
	}
}
