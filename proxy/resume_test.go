package proxy_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/stowage/stowage/proxy/internal/testenv"
)

// TestResumeAfterCut: the upstream connection drops at 50 %; the fill
// resumes with a Range request and the blob is complete and verified, at
// no more than 1.05x its size in upstream bytes.
func TestResumeAfterCut(t *testing.T) {
	t.Parallel()
	const size = 8 << 20
	e := newEnv(t, envOptions{})
	d := e.seedBlob("library/cut:v1", size, 5)
	e.up.SetFault(testenv.CutBlobs(size / 2))
	e.up.ResetCounts()

	resp := e.get(t.Context(), http.MethodGet, "/v2/library/cut/blobs/"+d.String(), nil)
	defer resp.Body.Close()
	got, n, err := readAllHash(resp.Body)
	if err != nil || got.String() != d.String() || n != size {
		t.Fatalf("client got %d bytes %s: %v", n, got, err)
	}
	if gets := e.up.Count(testenv.BlobGet); gets != 2 {
		t.Fatalf("upstream blob GETs = %d, want 2 (cut + resume)", gets)
	}
	if sent := e.up.BlobBytes(); float64(sent) > 1.05*size {
		t.Fatalf("upstream sent %d bytes for a %d-byte blob (> 1.05x)", sent, size)
	}
}

// TestResumeIgnoringRange: an upstream that ignores Range still ends in a
// correct blob.
func TestResumeIgnoringRange(t *testing.T) {
	t.Parallel()
	const size = 4 << 20
	e := newEnv(t, envOptions{})
	d := e.seedBlob("library/norange:v1", size, 6)
	cut := testenv.CutBlobs(size / 2)
	e.up.SetFault(func(w http.ResponseWriter, r *http.Request, next http.Handler) {
		r.Header.Del("Range") // a server without Range support
		if strings.Contains(r.URL.Path, "/blobs/") && r.Method == http.MethodGet && e.up.Count(testenv.BlobGet) == 1 {
			cut(w, r, next) // only the first download breaks
			return
		}
		next.ServeHTTP(w, r)
	})
	resp := e.get(t.Context(), http.MethodGet, "/v2/library/norange/blobs/"+d.String(), nil)
	defer resp.Body.Close()
	got, n, err := readAllHash(resp.Body)
	if err != nil || got.String() != d.String() || n != size {
		t.Fatalf("client got %d bytes %s: %v", n, got, err)
	}
}

// TestTagsListAndReferrers: tags/list passes through with pagination and
// falls back to cached tags when the upstream is down; referrers answer an
// empty index when the upstream has none.
func TestTagsListAndReferrers(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	img := testenv.DockerImage(t, 1, 256)
	for _, tag := range []string{"a", "b", "c"} {
		e.up.Push(t, "library/tl:"+tag, img)
	}
	list := func(q string) ([]string, string) {
		t.Helper()
		resp := e.get(context.Background(), http.MethodGet, "/v2/library/tl/tags/list"+q, nil)
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			b, _ := io.ReadAll(resp.Body)
			t.Fatalf("tags/list%s: %d %s", q, resp.StatusCode, b)
		}
		var body struct {
			Name string
			Tags []string
		}
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
			t.Fatal(err)
		}
		return body.Tags, resp.Header.Get("Link")
	}
	if tags, _ := list(""); strings.Join(tags, ",") != "a,b,c" {
		t.Fatalf("tags %v", tags)
	}
	tags, link := list("?n=2")
	if strings.Join(tags, ",") != "a,b" || !strings.Contains(link, "last=b") {
		t.Fatalf("page 1: %v, Link %q", tags, link)
	}
	// Cache two tags locally, then lose the upstream: local tags answer.
	for _, tag := range []string{"a", "c"} {
		resp := e.get(context.Background(), http.MethodGet, "/v2/library/tl/manifests/"+tag, nil)
		resp.Body.Close()
	}
	e.up.Close()
	if tags, _ := list("?n=5&last=zz"); len(tags) != 0 {
		t.Fatalf("fallback past the end: %v", tags)
	}
	if tags, _ := list("?n=7"); strings.Join(tags, ",") != "a,c" {
		t.Fatalf("fallback tags %v", tags)
	}
}

// TestReferrers: the referrers answer is an OCI index, cached, and served
// from the cache when the upstream is down.
func TestReferrers(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	img := testenv.DockerImage(t, 1, 256)
	e.up.Push(t, "library/sig:v1", img)
	d, _ := img.Digest()
	get := func() (int, string, []byte) {
		resp := e.get(context.Background(), http.MethodGet, "/v2/library/sig/referrers/"+d.String(), nil)
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header.Get("Content-Type"), b
	}
	status, ct, body := get()
	if status != http.StatusOK || ct != "application/vnd.oci.image.index.v1+json" {
		t.Fatalf("referrers: %d %s %s", status, ct, body)
	}
	var idx struct {
		SchemaVersion int               `json:"schemaVersion"`
		Manifests     []json.RawMessage `json:"manifests"`
	}
	if err := json.Unmarshal(body, &idx); err != nil || idx.SchemaVersion != 2 || idx.Manifests == nil {
		t.Fatalf("referrers body %s: %v", body, err)
	}
	e.up.Close()
	status2, _, body2 := get()
	if status2 != http.StatusOK || string(body2) != string(body) {
		t.Fatalf("referrers with upstream down: %d %s", status2, body2)
	}
}

// TestReferrersFilter: with artifactType the answer holds only that type
// and says so, even when the upstream ignores the filter.
func TestReferrersFilter(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	subject := "sha256:" + strings.Repeat("c", 64)
	index := `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[` +
		`{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:` + strings.Repeat("a", 64) + `","size":10,"artifactType":"application/vnd.a"},` +
		`{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:` + strings.Repeat("b", 64) + `","size":10,"artifactType":"application/vnd.b"}]}`
	e.up.SetFault(func(w http.ResponseWriter, r *http.Request, next http.Handler) {
		if !strings.Contains(r.URL.Path, "/referrers/") {
			next.ServeHTTP(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/vnd.oci.image.index.v1+json")
		_, _ = w.Write([]byte(index)) // an upstream that does not filter
	})
	resp := e.get(context.Background(), http.MethodGet, "/v2/library/sig/referrers/"+subject+"?artifactType=application/vnd.a", nil)
	defer resp.Body.Close()
	var got struct {
		Manifests []struct {
			ArtifactType string `json:"artifactType"`
		} `json:"manifests"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
		t.Fatal(err)
	}
	if resp.Header.Get("OCI-Filters-Applied") != "artifactType" || len(got.Manifests) != 1 || got.Manifests[0].ArtifactType != "application/vnd.a" {
		t.Fatalf("filtered referrers: header %q, %+v", resp.Header.Get("OCI-Filters-Applied"), got.Manifests)
	}
}

// TestReferrersPaginated: an upstream that pages its referrers list with
// Link headers gives the client one complete index (no Link to follow on
// our side), cached whole for when the upstream is away.
func TestReferrersPaginated(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	subject := "sha256:" + strings.Repeat("c", 64)
	var pages atomic.Int32
	e.up.SetFault(func(w http.ResponseWriter, r *http.Request, next http.Handler) {
		if !strings.Contains(r.URL.Path, "/referrers/") {
			next.ServeHTTP(w, r)
			return
		}
		pages.Add(1)
		digit := "a"
		if r.URL.Query().Get("last") == "" {
			w.Header().Set("Link", "<"+r.URL.Path+"?n=1&last=a>; rel=\"next\"")
		} else {
			digit = "b"
		}
		w.Header().Set("Content-Type", "application/vnd.oci.image.index.v1+json")
		_, _ = w.Write([]byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[` +
			`{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:` + strings.Repeat(digit, 64) + `","size":10,"artifactType":"application/vnd.sig"}]}`))
	})
	get := func() (string, []string) {
		resp := e.get(context.Background(), http.MethodGet, "/v2/library/sig/referrers/"+subject, nil)
		defer resp.Body.Close()
		var idx struct {
			Manifests []struct {
				Digest string `json:"digest"`
			} `json:"manifests"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&idx); err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("referrers: %d %v", resp.StatusCode, err)
		}
		var got []string
		for _, d := range idx.Manifests {
			got = append(got, d.Digest[len("sha256:"):][:1])
		}
		return resp.Header.Get("Link"), got
	}
	if link, got := get(); strings.Join(got, "") != "ab" || link != "" || pages.Load() != 2 {
		t.Fatalf("paginated referrers: %v, Link %q, %d upstream pages", got, link, pages.Load())
	}
	e.up.Close()
	if _, got := get(); strings.Join(got, "") != "ab" {
		t.Fatalf("cached paginated referrers: %v", got)
	}
}
