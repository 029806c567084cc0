package proxy_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/stowage/stowage/proxy/internal/testenv"
	"github.com/stowage/stowage/storage"
)

// readyz fetches /readyz and decodes it.
func (e *env) readyz(t *testing.T) (int, string, []string) {
	t.Helper()
	resp := e.get(context.Background(), http.MethodGet, "/readyz", nil)
	defer resp.Body.Close()
	var body struct {
		Status  string   `json:"status"`
		Reasons []string `json:"reasons"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatalf("/readyz body: %v", err)
	}
	return resp.StatusCode, body.Status, body.Reasons
}

// pullBlob GETs a blob through the proxy and checks it arrives complete
// and right.
func (e *env) pullBlob(t *testing.T, repo string, d digest.Digest, size int64) {
	t.Helper()
	resp := e.get(context.Background(), http.MethodGet, "/v2/"+repo+"/blobs/"+d.String(), nil)
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET blob: status %d: %s", resp.StatusCode, ociError(t, resp))
	}
	got, n, err := readAllHash(resp.Body)
	if err != nil || got != d || n != size {
		t.Fatalf("GET blob: %d bytes hashing to %s (err %v), want %d bytes of %s", n, got, err, size, d)
	}
}

// TestDiskFullServesUncached runs the proxy on a real 8 MiB tmpfs: with the
// disk full, a manifest and a 12 MiB blob are still served (from the
// upstream, verified, uncached); with some space but less than the blob,
// concurrent clients of a fill that runs out of space get complete,
// verified bytes; nothing corrupt is committed; /readyz says degraded and
// one episode is counted; once space returns, the next pull caches.
func TestDiskFullServesUncached(t *testing.T) {
	dir := testenv.SmallFS(t, 8<<20)
	e := newEnv(t, envOptions{root: dir})
	const size = 12 << 20
	d := e.seedBlob("library/big:v1", size, 31)
	ctx := context.Background()

	// The disk is full to the last block.
	filler := testenv.FillFS(t, dir)
	resp := e.get(ctx, http.MethodGet, "/v2/library/big/manifests/v1", http.Header{"Accept": {"application/vnd.docker.distribution.manifest.v2+json"}})
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("manifest on a full disk: status %d", resp.StatusCode)
	}
	e.pullBlob(t, "library/big", d, size)
	if code, status, reasons := e.readyz(t); code != http.StatusOK || status != "degraded" {
		t.Fatalf("/readyz on a full disk: %d %s %v, want 200 degraded", code, status, reasons)
	}

	// 8 MiB free, the blob needs 12: the fill runs out of space midway and
	// its clients continue from the upstream.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() { e.pullBlob(t, "library/big", d, size) })
	}
	wg.Wait()
	if _, err := e.store.StatBlob(ctx, d); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("blob committed although it never fit: %v", err)
	}
	res, err := e.store.Verify(ctx, storage.VerifyOptions{})
	if err != nil || len(res.Problems) > 0 {
		t.Fatalf("verify after the disk-full episode: %v %v", res.Problems, err)
	}
	m := e.metrics(t)
	for _, want := range []string{"stowage_disk_full_episodes_total 1\n", "stowage_disk_full 1\n", `stowage_uncached_blob_serves_total{outcome="complete"} 4`} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %q", want)
		}
	}

	// Space returns: the next pull caches, the episode ends.
	testenv.ResizeFS(t, dir, 64<<20)
	e.pullBlob(t, "library/big", d, size)
	waitFor(t, "the blob committed", func() bool { _, err := e.store.StatBlob(ctx, d); return err == nil })
	if code, status, reasons := e.readyz(t); code != http.StatusOK || status != "ok" {
		t.Fatalf("/readyz after space returned: %d %s %v, want 200 ok", code, status, reasons)
	}
	m = e.metrics(t)
	for _, want := range []string{"stowage_disk_full_episodes_total 1\n", "stowage_disk_full 0\n"} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	e.up.ResetCounts()
	e.pullBlob(t, "library/big", d, size)
	if n := e.up.Count(testenv.BlobGet); n != 0 {
		t.Fatalf("cached blob fetched from the upstream again (%d GETs)", n)
	}
}

// TestDiskFullUncachedIsVerified: the bytes a client gets from the
// upstream after its fill ran out of space are verified with the ones it
// got before. An upstream that ignores Range resends the prefix, which is
// skipped: the response completes, right. An upstream that corrupts the
// continuation: the response is cut short, never complete.
func TestDiskFullUncachedIsVerified(t *testing.T) {
	dir := testenv.SmallFS(t, 8<<20)
	e := newEnv(t, envOptions{root: dir})
	const size = 12 << 20
	d := e.seedBlob("library/big:v1", size, 32)
	ctx := context.Background()

	e.up.SetFault(testenv.IgnoreRange(nil))
	e.pullBlob(t, "library/big", d, size)
	if n := e.up.Count(testenv.BlobGet); n < 2 {
		t.Fatalf("%d upstream blob GETs, want the fill's and the continuation's", n)
	}

	pass := func(w http.ResponseWriter, r *http.Request, next http.Handler) { next.ServeHTTP(w, r) }
	e.up.SetFault(testenv.FirstBlobGet(pass, testenv.CorruptBlobs(2<<20)))
	resp := e.get(ctx, http.MethodGet, "/v2/library/big/blobs/"+d.String(), nil)
	got, n, err := readAllHash(resp.Body)
	resp.Body.Close()
	if err == nil {
		t.Fatalf("corrupt continuation: a complete response of %d bytes hashing to %s (status %d), want it cut short", n, got, resp.StatusCode)
	}
	if _, err := e.store.StatBlob(ctx, d); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("blob committed: %v", err)
	}
	if !strings.Contains(e.metrics(t), `stowage_uncached_blob_serves_total{outcome="failed"} 1`) {
		t.Error("the failed uncached serve is not counted")
	}
}

// TestDiskFullRanges: range requests are served too when the cache cannot
// store the blob: a short range with the disk full (its bytes go out only
// once the whole blob is verified), and a resume range ("bytes=N-") whose
// fill runs out of space midway.
func TestDiskFullRanges(t *testing.T) {
	dir := testenv.SmallFS(t, 8<<20)
	e := newEnv(t, envOptions{root: dir})
	const size = 12 << 20
	d := e.seedBlob("library/big:v1", size, 33)
	data := testenv.RandomBytes(size, 33)
	ctx := context.Background()
	get := func(rng string) []byte {
		t.Helper()
		resp := e.get(ctx, http.MethodGet, "/v2/library/big/blobs/"+d.String(), http.Header{"Range": {rng}})
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusPartialContent || err != nil {
			t.Fatalf("Range %s: status %d, err %v", rng, resp.StatusCode, err)
		}
		return body
	}

	filler := testenv.FillFS(t, dir)
	if got := get("bytes=100-199"); !bytes.Equal(got, data[100:200]) {
		t.Fatalf("bytes=100-199 on a full disk: %d bytes, wrong", len(got))
	}
	if got := get("bytes=-10"); !bytes.Equal(got, data[size-10:]) {
		t.Fatalf("bytes=-10 on a full disk: %d bytes, wrong", len(got))
	}
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	const from = 5_000_000
	if got := get(fmt.Sprintf("bytes=%d-", from)); !bytes.Equal(got, data[from:]) {
		t.Fatalf("bytes=%d- with the fill running out of space: %d bytes, wrong", from, len(got))
	}
	if _, err := e.store.StatBlob(ctx, d); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("blob committed: %v", err)
	}
}
