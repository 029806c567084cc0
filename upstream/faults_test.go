package upstream

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/stowage/stowage/upstream/internal/testregistry"
)

var blobDigest = digest.FromString("blob")

func serve(t *testing.T, h http.HandlerFunc) *httptest.Server {
	t.Helper()
	s := httptest.NewServer(h)
	t.Cleanup(func() { s.CloseClientConnections(); s.Close() })
	return s
}

func TestErrorMapping(t *testing.T) {
	t.Parallel()
	big := `{"errors":[{"code":"X","message":"` + strings.Repeat("a", 200<<10) + `"}]}`
	for _, tc := range []struct {
		status   int
		body     string
		want     error
		wantCode string
		wantMsg  string
	}{
		{404, `{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}`, ErrNotFound, "MANIFEST_UNKNOWN", "manifest unknown"},
		{404, `{"errors":[{"code":"NAME_UNKNOWN","message":"repository name not known"}]}`, ErrNotFound, "NAME_UNKNOWN", "repository name not known"},
		{401, `{"errors":[{"code":"UNAUTHORIZED","message":"no"}]}`, ErrUnauthorized, "UNAUTHORIZED", "no"},
		{403, `{"errors":[{"code":"DENIED","message":"requested access to the resource is denied"}]}`, ErrDenied, "DENIED", "requested access to the resource is denied"},
		{429, `{"errors":[{"code":"TOOMANYREQUESTS","message":"pull rate limit"}]}`, ErrTooManyRequests, "TOOMANYREQUESTS", "pull rate limit"},
		{500, `oops`, ErrUnavailable, "", ""},
		{502, ``, ErrUnavailable, "", ""},
		{503, `{"errors":[]}`, ErrUnavailable, "", ""},
		{400, `{"errors":[{"code":"MANIFEST_INVALID","message":"bad"}]}`, ErrInvalid, "MANIFEST_INVALID", "bad"},
		{500, big, ErrUnavailable, "", ""}, // over the cap: not parsed, not buffered
	} {
		t.Run(http.StatusText(tc.status)+tc.wantCode, func(t *testing.T) {
			t.Parallel()
			var calls atomic.Int64
			s := serve(t, func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/v2/" {
					return
				}
				calls.Add(1)
				w.WriteHeader(tc.status)
				_, _ = io.WriteString(w, tc.body)
			})
			cfg := testConfig(s.URL)
			c := newClient(t, cfg, WithSleep(func(context.Context, time.Duration) error { return nil }))
			_, err := c.GetManifest(t.Context(), "a/b", "latest", nil)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			var se *StatusError
			if !errors.As(err, &se) || se.Status != tc.status || se.Code != tc.wantCode || se.Message != tc.wantMsg {
				t.Fatalf("StatusError = %+v", se)
			}
			wantCalls := int64(1)
			if temporaryStatus(tc.status) {
				wantCalls = int64(cfg.Retry.Attempts)
			}
			if calls.Load() != wantCalls {
				t.Fatalf("calls = %d, want %d", calls.Load(), wantCalls)
			}
		})
	}
}

func TestManifestChecks(t *testing.T) {
	t.Parallel()
	body := `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}`
	good := digest.FromString(body)
	s := serve(t, func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.HasSuffix(r.URL.Path, "/big"):
			_, _ = io.WriteString(w, strings.Repeat(" ", 5000))
		case strings.HasSuffix(r.URL.Path, "/liar"):
			w.Header().Set("Docker-Content-Digest", digest.FromString("other").String())
			_, _ = io.WriteString(w, body)
		default:
			w.Header().Set("Content-Type", "application/vnd.oci.image.manifest.v1+json; charset=utf-8")
			_, _ = io.WriteString(w, body)
		}
	})
	c := newClient(t, testConfig(s.URL), WithMaxManifestSize(4096))
	ctx := t.Context()
	if _, err := c.GetManifest(ctx, "a/b", "big", nil); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("big: %v", err)
	}
	if _, err := c.GetManifest(ctx, "a/b", "liar", nil); !errors.Is(err, ErrDigestMismatch) {
		t.Fatalf("liar: %v", err)
	}
	if _, err := c.GetManifest(ctx, "a/b", digest.FromString("x").String(), nil); !errors.Is(err, ErrDigestMismatch) {
		t.Fatalf("wrong digest: %v", err)
	}
	m, err := c.GetManifest(ctx, "a/b", good.String(), nil)
	if err != nil || m.Digest != good || m.MediaType != "application/vnd.oci.image.manifest.v1+json" {
		t.Fatalf("good: %+v %v", m, err)
	}
	m, err = c.GetManifest(ctx, "a/b", "tag", nil) // no Docker-Content-Digest: computed
	if err != nil || m.Digest != good {
		t.Fatalf("computed digest: %+v %v", m, err)
	}
}

func TestRangeHandling(t *testing.T) {
	t.Parallel()
	data := []byte("0123456789abcdef")
	s := serve(t, func(w http.ResponseWriter, r *http.Request) {
		if strings.Contains(r.URL.Path, "/bad/") {
			w.Header().Set("Content-Range", "bytes 5-15/16")
			w.WriteHeader(http.StatusPartialContent)
			_, _ = w.Write(data[5:])
			return
		}
		_, _ = w.Write(data) // ignores Range
	})
	c := newClient(t, testConfig(s.URL))
	b, err := c.GetBlob(t.Context(), "ignores/range", blobDigest, 10)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(b.Body)
	b.Body.Close()
	if b.Offset != 0 || string(got) != string(data) || b.Size != 16 {
		t.Fatalf("ignored Range: offset %d size %d %q", b.Offset, b.Size, got)
	}
	if _, err := c.GetBlob(t.Context(), "bad/range", blobDigest, 10); !errors.Is(err, ErrInvalid) {
		t.Fatalf("mismatching Content-Range: %v", err)
	}
}

func TestRetryAfterHonoured(t *testing.T) {
	t.Parallel()
	var calls atomic.Int64
	s := serve(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v2/" {
			return
		}
		n := calls.Add(1)
		if strings.Contains(r.URL.Path, "/always/") || n <= 2 {
			w.Header().Set("Retry-After", "2")
			if strings.Contains(r.URL.Path, "/always/") {
				w.Header().Set("Retry-After", "30")
			}
			w.WriteHeader(http.StatusTooManyRequests)
			return
		}
		w.Header().Set("Ratelimit-Limit", "100;w=21600")
		w.Header().Set("Ratelimit-Remaining", "76;w=21600")
		_, _ = io.WriteString(w, "{}")
	})
	cfg := testConfig(s.URL)
	cfg.Retry.MaxBackoff = 5 * time.Second
	var mu sync.Mutex
	var waits []time.Duration
	var limit, remaining int
	c := newClient(t, cfg,
		WithSleep(func(_ context.Context, d time.Duration) error {
			mu.Lock()
			waits = append(waits, d)
			mu.Unlock()
			return nil
		}),
		WithRateLimitObserver(func(host string, l, r int) { limit, remaining = l, r }))
	if _, err := c.GetManifest(t.Context(), "ok/repo", "latest", nil); err != nil {
		t.Fatal(err)
	}
	if len(waits) != 2 || waits[0] != 2*time.Second || waits[1] != 2*time.Second {
		t.Fatalf("waits = %v, want [2s 2s]", waits)
	}
	if limit != 100 || remaining != 76 {
		t.Fatalf("rate limit observed %d/%d", limit, remaining)
	}

	// A Retry-After over MaxBackoff is not waited for (deliberately
	// changed: it used to be waited for, capped, attempts times): the 429
	// is passed on at once with its Retry-After.
	waits = nil
	calls.Store(0)
	_, err := c.GetManifest(t.Context(), "always/repo", "latest", nil)
	if !errors.Is(err, ErrTooManyRequests) {
		t.Fatalf("err = %v", err)
	}
	if d, ok := RetryAfter(err); !ok || d != 30*time.Second {
		t.Fatalf("RetryAfter = %v %v", d, ok)
	}
	if calls.Load() != 1 || len(waits) != 0 {
		t.Fatalf("calls %d waits %v: want 1 call, no wait", calls.Load(), waits)
	}
}

func TestRedirects(t *testing.T) {
	t.Parallel()
	var cdnHits atomic.Int64
	cdn := serve(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "" {
			http.Error(w, "credential forwarded to CDN", http.StatusBadRequest)
			return
		}
		cdnHits.Add(1)
		_, _ = io.WriteString(w, "blob-bytes")
	})
	reg := testregistry.Start(t,
		testregistry.WithTokenAuth(testregistry.TokenAuth{Username: "u", Password: "p-secret"}),
		testregistry.WithHandler(func(h http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if strings.Contains(r.URL.Path, "/blobs/") && r.Header.Get("Authorization") != "" {
					http.Redirect(w, r, cdn.URL+"/data?X-Amz-Signature=sig-secret-xyz", http.StatusTemporaryRedirect)
					return
				}
				h.ServeHTTP(w, r)
			})
		}))
	cfg := testConfig(reg.URL)
	cfg.Auth.Username, cfg.Auth.Password = "u", "p-secret"
	c := newClient(t, cfg)
	b, err := c.GetBlob(t.Context(), "a/b", blobDigest, 0)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(b.Body)
	b.Body.Close()
	if string(got) != "blob-bytes" || cdnHits.Load() != 1 {
		t.Fatalf("got %q, cdn hits %d", got, cdnHits.Load())
	}

	cfg.Internal = false
	c = newClient(t, cfg)
	_, err = c.GetBlob(t.Context(), "a/b", blobDigest, 0)
	if err == nil || !strings.Contains(err.Error(), "internal address") || !errors.Is(err, ErrForbiddenAddress) || Temporary(err) {
		t.Fatalf("redirect to 127.0.0.1 with internal=false: %v", err)
	}
	if strings.Contains(err.Error(), "sig-secret-xyz") {
		t.Fatalf("signed URL leaked: %v", err)
	}
	if cdnHits.Load() != 1 {
		t.Fatal("refused redirect reached the CDN")
	}
}

func TestStallTimeout(t *testing.T) {
	t.Parallel()
	s := serve(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v2/" {
			return
		}
		w.Header().Set("Content-Length", "1000")
		_, _ = w.Write([]byte("some bytes"))
		w.(http.Flusher).Flush()
		<-r.Context().Done() // hang until the client gives up
	})
	cfg := testConfig(s.URL)
	cfg.Timeouts.Stall = 200 * time.Millisecond
	c := newClient(t, cfg)
	b, err := c.GetBlob(t.Context(), "a/b", blobDigest, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Body.Close()
	start := time.Now()
	got, err := io.ReadAll(b.Body)
	if !errors.Is(err, ErrUnavailable) || string(got) != "some bytes" {
		t.Fatalf("read = %q, %v; want ErrUnavailable", got, err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("stall detected after %s", d)
	}
}

func TestEndpointFallback(t *testing.T) {
	t.Parallel()
	body := `{"schemaVersion":2}`
	mirror := serve(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v2/" {
			w.WriteHeader(http.StatusNotFound)
		}
	})
	var sawPrefix atomic.Bool
	public := serve(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v2/hub/library/x/manifests/1" {
			sawPrefix.Store(true)
		}
		_, _ = io.WriteString(w, body)
	})
	c := newClient(t, testConfig(mirror.URL, "http://127.0.0.1:1", public.URL+"/hub"))
	m, err := c.GetManifest(t.Context(), "library/x", "1", nil)
	if err != nil || string(m.Body) != body || !sawPrefix.Load() {
		t.Fatalf("fallback: %v (prefix seen %v)", err, sawPrefix.Load())
	}
}

func TestReferrers(t *testing.T) {
	t.Parallel()
	s := serve(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v2/" {
			return
		}
		if r.URL.Query().Get("artifactType") != "application/spdx+json" {
			http.Error(w, "filter missing", http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/vnd.oci.image.index.v1+json")
		_, _ = io.WriteString(w, `{"schemaVersion":2,"manifests":[]}`)
	})
	c := newClient(t, testConfig(s.URL))
	m, err := c.Referrers(t.Context(), "a/b", blobDigest, "application/spdx+json")
	if err != nil || m.MediaType != "application/vnd.oci.image.index.v1+json" {
		t.Fatalf("Referrers = %+v, %v", m, err)
	}
}

// referrerPages serves a referrers listing in pages of two descriptors,
// linked with relative "Link: <...>; rel=next" URLs as registries send them.
// Descriptor 3 appears on two pages. next rewrites a page's Link target.
func referrerPages(t *testing.T, descs []string, next func(page int, target string) string) *httptest.Server {
	t.Helper()
	return serve(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v2/" {
			return
		}
		page, _ := strconv.Atoi(r.URL.Query().Get("page"))
		var items []string
		for i := page * 2; i < len(descs) && i < page*2+2; i++ {
			items = append(items, `{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"`+descs[i]+`","size":1,"artifactType":"application/vnd.sig"}`)
		}
		if (page+1)*2 < len(descs) {
			target := fmt.Sprintf("%s?page=%d", r.URL.Path, page+1)
			if next != nil {
				target = next(page, target)
			}
			w.Header().Set("Link", `<`+target+`>; rel="next"`)
		}
		w.Header().Set("Content-Type", "application/vnd.oci.image.index.v1+json")
		_, _ = io.WriteString(w, `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[`+strings.Join(items, ",")+`]}`)
	})
}

func TestReferrersPagination(t *testing.T) {
	t.Parallel()
	var descs []string
	for _, c := range "123345" { // "3" twice: a descriptor repeated across pages
		descs = append(descs, "sha256:"+strings.Repeat(string(c), 64))
	}
	c := newClient(t, testConfig(referrerPages(t, descs, nil).URL))
	m, err := c.Referrers(t.Context(), "a/b", blobDigest, "")
	if err != nil {
		t.Fatal(err)
	}
	var idx struct {
		MediaType string `json:"mediaType"`
		Manifests []struct {
			Digest string `json:"digest"`
		} `json:"manifests"`
	}
	if err := json.Unmarshal(m.Body, &idx); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, d := range idx.Manifests {
		got = append(got, d.Digest[len("sha256:"):][:1])
	}
	if strings.Join(got, "") != "12345" || idx.MediaType != "application/vnd.oci.image.index.v1+json" || m.Digest != digest.FromBytes(m.Body) {
		t.Fatalf("merged referrers: %v (%s)", got, m.Body)
	}

	// An absolute Link naming another host: the page is still asked of
	// the endpoint (the named host, a closed loopback port, is never dialled).
	c = newClient(t, testConfig(referrerPages(t, descs, func(_ int, target string) string { return "http://127.0.0.2:1" + target }).URL))
	if m, err := c.Referrers(t.Context(), "a/b", blobDigest, ""); err != nil || !strings.Contains(string(m.Body), descs[5]) {
		t.Fatalf("absolute Link: %v", err)
	}

	for name, next := range map[string]func(int, string) string{
		"other path": func(int, string) string { return "/v2/a/b/tags/list?page=1" },
		"loop":       func(_ int, target string) string { return strings.Replace(target, "page=2", "page=1", 1) },
	} {
		c := newClient(t, testConfig(referrerPages(t, descs, next).URL))
		if _, err := c.Referrers(t.Context(), "a/b", blobDigest, ""); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", name, err)
		}
	}
}
