package proxy_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stowage/stowage/proxy/internal/testenv"
)

// fetch GETs url and discards the body, returning its length.
func fetch(b *testing.B, client *http.Client, url string, hdr http.Header) int64 {
	req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, url, nil)
	if err != nil {
		b.Fatal(err)
	}
	req.Header = hdr
	resp, err := client.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	n, err := io.Copy(io.Discard, resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		b.Fatalf("GET %s: %d %v", url, resp.StatusCode, err)
	}
	return n
}

// reference times n GETs of the same bytes from a plain net/http file
// server (http.ServeContent on the same file, sendfile), measured in the
// same run: the ceiling Stowage is compared against.
func reference(b *testing.B, client *http.Client, url string, n int) time.Duration {
	start := time.Now()
	for range n {
		fetch(b, client, url, nil)
	}
	return time.Since(start)
}

// BenchmarkCachedBlob64MiB: a cached 64 MiB blob over a real loopback
// socket; reports the ratio of Stowage's throughput to a plain file server
// on the same file (1.0 = as fast as the ceiling).
func BenchmarkCachedBlob64MiB(b *testing.B) {
	const size = 64 << 20
	e := newEnv(b, envOptions{})
	d := e.seedBlob("library/bench:v1", size, 9)
	url := e.srv.URL + "/v2/library/bench/blobs/" + d.String()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
	fetch(b, client, url, nil) // warm: fill and commit
	file := filepath.Join(e.root, "docker/registry/v2/blobs/sha256", d.Encoded()[:2], d.Encoded(), "data")
	if _, err := os.Stat(file); err != nil {
		b.Fatal(err)
	}
	ref := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.ServeFile(w, r, file)
	}))
	defer ref.Close()

	b.SetBytes(size)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		fetch(b, client, url, nil)
	}
	b.StopTimer()
	ours := b.Elapsed()
	theirs := reference(b, client, ref.URL, b.N)
	b.ReportMetric(float64(theirs)/float64(ours), "x-of-fileserver")
}

// BenchmarkColdFill64MiB: a 64 MiB blob pulled through Stowage with an
// empty cache (fill: upstream GET, hash, stage, stream to the client,
// verify, commit), against the same GET made straight to the upstream
// registry in the same run (1.0 = a cold pull through the proxy costs no
// more than pulling from the upstream directly).
func BenchmarkColdFill64MiB(b *testing.B) {
	const size = 64 << 20
	base := newEnv(b, envOptions{})
	path := "/v2/library/bench/blobs/" + base.seedBlob("library/bench:v1", size, 11).String()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}}

	b.SetBytes(size)
	b.ReportAllocs()
	var ours time.Duration
	for b.Loop() {
		b.StopTimer()
		e := newEnv(b, envOptions{shared: base.up}) // a fresh, empty cache
		b.StartTimer()
		start := time.Now()
		fetch(b, client, e.srv.URL+path, nil)
		ours += time.Since(start)
	}
	b.StopTimer()
	theirs := reference(b, client, base.up.URL+path, b.N)
	b.ReportMetric(float64(theirs)/float64(ours), "x-of-direct")
}

// BenchmarkCachedTagManifest: GET of a fresh cached tag (served from the
// in-memory LRU), against a file server returning the same bytes.
func BenchmarkCachedTagManifest(b *testing.B) {
	e := newEnv(b, envOptions{})
	e.clock.Advance(-time.Hour) // keep the tag fresh for the whole run
	img := testenv.DockerImage(b, 3, 256)
	e.up.Push(b, "library/bench:v1", img)
	url := e.srv.URL + "/v2/library/bench/manifests/v1"
	hdr := http.Header{"Accept": {"application/vnd.docker.distribution.manifest.v2+json"}}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
	fetch(b, client, url, hdr)
	raw, _ := img.RawManifest()
	file := filepath.Join(b.TempDir(), "manifest.json")
	if err := os.WriteFile(file, raw, 0o644); err != nil {
		b.Fatal(err)
	}
	ref := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.ServeFile(w, r, file)
	}))
	defer ref.Close()

	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		fetch(b, client, url, hdr)
	}
	b.StopTimer()
	ours := b.Elapsed()
	theirs := reference(b, client, ref.URL, b.N)
	b.ReportMetric(float64(theirs)/float64(ours), "x-of-fileserver")
}
