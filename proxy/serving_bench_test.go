package proxy_test

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stowage/stowage/proxy"
)

// BenchmarkCachedBlobServing64MiB is BenchmarkCachedBlob64MiB behind the
// client-facing wrapper (proxy.Serving with the idle-write deadline), the
// way serve runs it: its throughput should match the bare handler's, since
// the copy still reaches sendfile (in idle-deadline chunks). Check with
// strace -f -c -e trace=sendfile,write on the test binary.
func BenchmarkCachedBlobServing64MiB(b *testing.B) {
	const size = 64 << 20
	e := newEnv(b, envOptions{})
	d := e.seedBlob("library/bench:v1", size, 9)
	srv := httptest.NewServer(proxy.Serving(e.proxy, proxy.ServingOptions{WriteIdleTimeout: time.Minute}))
	defer srv.Close()
	url := srv.URL + "/v2/library/bench/blobs/" + d.String()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
	fetch(b, client, url, nil) // warm: fill and commit
	b.SetBytes(size)
	b.ResetTimer()
	for b.Loop() {
		fetch(b, client, url, nil)
	}
}
