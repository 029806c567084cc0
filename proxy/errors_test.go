package proxy_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stowage/stowage/config"
	"github.com/stowage/stowage/proxy"
	"github.com/stowage/stowage/proxy/internal/testenv"
	"github.com/stowage/stowage/storage"
	"github.com/stowage/stowage/upstream"
)

// TestUpstreamDownAnswers503: an unreachable upstream and uncached content
// is 503 UNAVAILABLE (the errcode's own status) with Retry-After, for
// manifests and blobs alike.
func TestUpstreamDownAnswers503(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + ln.Addr().String()
	ln.Close() // nothing listens there any more: connections are refused
	e := newEnv(t, envOptions{upstreamURL: closed})
	const d = "sha256:1111111111111111111111111111111111111111111111111111111111111111"
	for _, path := range []string{"/v2/library/down/manifests/v1", "/v2/library/down/blobs/" + d} {
		resp := e.get(t.Context(), http.MethodGet, path, nil)
		code := ociError(t, resp)
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable || code != "UNAVAILABLE" {
			t.Errorf("GET %s: %d %s, want 503 UNAVAILABLE", path, resp.StatusCode, code)
		}
		if resp.Header.Get("Retry-After") == "" {
			t.Errorf("GET %s: %d without Retry-After", path, resp.StatusCode)
		}
	}
}

// TestShutdownAnswers503: a request that reaches a proxy whose fills are
// closed (it is shutting down) gets 503 with Retry-After, not 500.
func TestShutdownAnswers503(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	d := e.seedBlob("library/closing:v1", 64<<10, 11)
	if err := e.proxy.Close(); err != nil {
		t.Fatal(err)
	}
	resp := e.get(t.Context(), http.MethodGet, "/v2/library/closing/blobs/"+d.String(), nil)
	code := ociError(t, resp)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || code != "UNAVAILABLE" || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("GET after Close: %d %s, Retry-After %q; want 503 UNAVAILABLE with Retry-After",
			resp.StatusCode, code, resp.Header.Get("Retry-After"))
	}
}

// syncBuffer is a log sink the handlers write to while the test reads it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) lines() []map[string]any {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(b.buf.Bytes()))
	for sc.Scan() {
		var m map[string]any
		if json.Unmarshal(sc.Bytes(), &m) == nil {
			out = append(out, m)
		}
	}
	return out
}

// TestAbortedResponseRecorded: a blob response cut short (the upstream's
// bytes fail the digest check after the headers went out, and the handler
// aborts with http.ErrAbortHandler) still reaches the request metrics and
// the access log, marked aborted.
func TestAbortedResponseRecorded(t *testing.T) {
	t.Parallel()
	up := testenv.Start(t, testenv.Options{})
	const size = 4 << 20
	img, layer := testenv.RawBlobImage(t, size, 12)
	up.Push(t, "library/cut:v1", img)
	d, err := layer.Digest()
	if err != nil {
		t.Fatal(err)
	}
	up.SetFault(testenv.CorruptBlobs(size))

	cfg := config.Default()
	cfg.Listen = "127.0.0.1:0"
	cfg.Storage.Root = t.TempDir()
	cfg.Upstreams = map[string]config.Upstream{"docker.io": {
		Endpoints: []string{up.URL},
		Timeouts:  config.Timeouts{Dial: time.Second, TLSHandshake: time.Second, ResponseHeader: 2 * time.Second, Stall: 2 * time.Second},
		Retry:     config.Retry{Attempts: 1, InitialBackoff: 10 * time.Millisecond, MaxBackoff: 10 * time.Millisecond},
		Internal:  true,
	}}
	store, err := storage.NewFilesystem(cfg.Storage.Root)
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	p, err := proxy.New(cfg, store, func(host string, u config.Upstream) (upstream.Registry, error) {
		return upstream.New(host, u)
	}, proxy.WithLogger(slog.New(slog.NewJSONHandler(logs, nil))))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(p)
	t.Cleanup(func() {
		srv.Close()
		_ = p.Close()
		_ = store.Close()
	})

	resp, err := http.Get(srv.URL + "/v2/library/cut/blobs/" + d.String())
	if err != nil {
		t.Fatal(err)
	}
	n, rerr := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || rerr == nil {
		t.Fatalf("want a 200 cut short, got %d with %d bytes, read error %v", resp.StatusCode, n, rerr)
	}

	// The record is written before net/http closes the connection, so it is
	// there once the client has seen the cut.
	mresp, err := http.Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(mresp.Body)
	mresp.Body.Close()
	for _, want := range []string{
		`stowage_http_requests_total{code="200",method="GET",route="blob"} 1`,
		`stowage_http_requests_aborted_total{method="GET",route="blob"} 1`,
	} {
		if !strings.Contains(string(metrics), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	var found bool
	for _, l := range logs.lines() {
		if l["msg"] == "request" && l["route"] == "blob" {
			found = true
			if l["aborted"] != true || l["level"] != "WARN" {
				t.Errorf("access log line of the cut response: %v; want aborted=true at WARN", l)
			}
		}
	}
	if !found {
		t.Errorf("no access log line for the cut response; log:\n%v", logs.lines())
	}
}
