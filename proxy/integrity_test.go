package proxy_test

import (
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stowage/stowage/config"
	"github.com/stowage/stowage/proxy/internal/testenv"
	"github.com/stowage/stowage/storage"
)

// TestCorruptBlobFoundWhileServing flips a byte of a committed blob on
// disk. With every hit sampled (cache.verify_sample: 1), the first GET
// serves the damaged copy and its background check removes it with its
// links; the second GET is a refetch from the upstream with the right
// bytes, and the blob is cached again.
func TestCorruptBlobFoundWhileServing(t *testing.T) {
	e := newEnv(t, envOptions{configure: func(c *config.Config) { c.Cache.VerifySample = 1 }})
	const size = 1 << 20
	d := e.seedBlob("library/flip:v1", size, 41)
	ctx := context.Background()
	e.pullBlob(t, "library/flip", d, size)
	waitFor(t, "the blob committed", func() bool { _, err := e.store.StatBlob(ctx, d); return err == nil })

	if linked, err := e.store.BlobLinked(ctx, "docker.io/library/flip", d); err != nil || !linked {
		t.Fatalf("blob not linked after its pull: %v %v", linked, err)
	}
	p := filepath.Join(e.root, filepath.FromSlash(storage.BlobDataPath(d)))
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	b[size/2] ^= 0xff
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	e.up.ResetCounts()

	// The first hit serves what is on disk; the check runs after it.
	resp := e.get(ctx, http.MethodGet, "/v2/library/flip/blobs/"+d.String(), nil)
	_, _, _ = readAllHash(resp.Body)
	resp.Body.Close()
	waitFor(t, "the corrupt blob removed", func() bool {
		return strings.Contains(e.metrics(t), `stowage_integrity_checks_total{result="corrupt"} 1`)
	})
	if _, err := e.store.StatBlob(ctx, d); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("corrupt blob still in the store: %v", err)
	}
	if linked, err := e.store.BlobLinked(ctx, "docker.io/library/flip", d); err != nil || linked {
		t.Fatalf("link to the corrupt blob left: %v %v", linked, err)
	}

	e.pullBlob(t, "library/flip", d, size)
	if n := e.up.Count(testenv.BlobGet); n != 1 {
		t.Fatalf("second GET: %d upstream blob GETs, want 1 (a refetch)", n)
	}
	waitFor(t, "the blob cached again", func() bool { _, err := e.store.StatBlob(ctx, d); return err == nil })
}
