package proxy_test

import (
	"bytes"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/stowage/stowage/proxy/internal/testenv"
)

// TestCloseHandsOverStagedBytes: Proxy.Close (the shutdown deadline) cuts
// a running fill; its client's response is cut short, and its staged bytes
// stay on the root as an orphan. A proxy started afterwards on the same
// root (a restart, or another replica) adopts them and downloads only the
// rest: the upstream sends size minus the adopted bytes, the blob is right,
// the takeover metrics say so, and nothing is left in staging.
func TestCloseHandsOverStagedBytes(t *testing.T) {
	t.Parallel()
	a := newEnv(t, envOptions{})
	const size = 4 << 20
	d := a.seedBlob("library/handover:v1", size, 51)
	a.up.SetFault(testenv.SlowBlobs(64<<10, 10*time.Millisecond))
	resp := a.get(t.Context(), http.MethodGet, "/v2/library/handover/blobs/"+d.String(), nil)
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
	got := make([]byte, 1<<20)
	if _, err := io.ReadFull(resp.Body, got); err != nil {
		t.Fatal(err)
	}
	if err := a.proxy.Close(); err != nil {
		t.Fatal(err)
	}
	if n, err := io.Copy(io.Discard, resp.Body); err == nil {
		t.Fatalf("the cut fill's response completed (%d more bytes)", n)
	}
	if left := stagingFiles(t, a.root); len(left) != 1 {
		t.Fatalf("staging files after the cut: %v, want the handed-over one", left)
	}

	a.up.SetFault(nil)
	a.up.ResetCounts()
	b := newEnv(t, envOptions{shared: a.up, root: a.root})
	r := b.fetch(t.Context(), http.MethodGet, "/v2/library/handover/blobs/"+d.String(), nil)
	if !r.complete() || digest.FromBytes(r.body) != d || len(r.body) != size {
		t.Fatalf("after the restart: %s, digest %s; want the blob", r, digest.FromBytes(r.body))
	}
	if !bytes.Equal(r.body[:len(got)], got) {
		t.Errorf("the cut client's bytes are not the blob's prefix")
	}
	m := scrape(t, b)
	adopted := m[`stowage_fill_inherited_bytes_total{source="adopted"}`]
	downloaded := m[`stowage_fill_takeover_downloaded_bytes_total`]
	t.Logf("adopted %.0f bytes, downloaded %.0f of %d", adopted, downloaded, size)
	if int64(adopted) < int64(len(got)) || int64(adopted+downloaded) != size {
		t.Errorf("adopted %.0f + downloaded %.0f bytes; want at least the %d bytes the cut client had, and %d together", adopted, downloaded, len(got), size)
	}
	for key, want := range map[string]float64{
		`stowage_fill_takeovers_total{source="adopted"}`:        1,
		`stowage_fill_takeovers_total{source="none"}`:           0,
		`stowage_fill_inherited_bytes_total{source="streamed"}`: 0,
		`stowage_upstream_bytes_total{upstream="docker.io"}`:    downloaded,
	} {
		if m[key] != want {
			t.Errorf("%s = %v, want %v", key, m[key], want)
		}
	}
	if n := a.up.Count(testenv.BlobGet); n != 1 {
		t.Errorf("upstream blob GETs after the restart = %d, want 1", n)
	}
	if left := stagingFiles(t, a.root); len(left) != 0 {
		t.Errorf("staging files after the takeover's commit: %v", left)
	}
}
