package proxy_test

import (
	"net/http"
	"runtime"
	"testing"

	"github.com/stowage/stowage/proxy/internal/testenv"
)

// TestColdPullMemoryFlat: a cold 64 MiB blob pull (upstream registry, proxy
// fill and client all in this process) allocates far less than the blob:
// everything streams, nothing buffers a whole blob.
func TestColdPullMemoryFlat(t *testing.T) {
	const size = 64 << 20
	e := newEnv(t, envOptions{})
	img, layer := testenv.RawBlobImage(t, size, 31)
	e.up.Push(t, "library/mem:v1", img)
	d, _ := layer.Digest()
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	resp := e.get(t.Context(), http.MethodGet, "/v2/library/mem/blobs/"+d.String(), nil)
	got, n, err := readAllHash(resp.Body)
	resp.Body.Close()
	runtime.ReadMemStats(&after)
	if err != nil || got.String() != d.String() || n != size {
		t.Fatalf("pull: %v %s %d", err, got, n)
	}
	allocated := after.TotalAlloc - before.TotalAlloc
	t.Logf("allocated %d KiB for a %d KiB blob", allocated>>10, size>>10)
	if allocated > size/4 {
		t.Fatalf("a cold %d MiB pull allocated %d MiB: something buffers the blob", size>>20, allocated>>20)
	}
}
