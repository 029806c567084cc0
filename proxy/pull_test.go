package proxy_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/validate"

	"github.com/opencontainers/go-digest"

	"github.com/stowage/stowage/proxy/internal/testenv"
)

func jsonDecode(r io.Reader, v any) error { return json.NewDecoder(r).Decode(v) }

// TestPullThrough pulls a Docker image, an OCI image and a multi-arch index
// through the proxy with a real client library: manifests are
// byte-identical to the upstream's, every blob verifies, and a second pull
// costs no upstream blob request.
func TestPullThrough(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	docker := testenv.DockerImage(t, 3, 4096)
	oci := testenv.OCIImage(t, 2, 4096)
	idx, arch := testenv.MultiArchIndex(t)
	e.up.Push(t, "library/docker-img:v1", docker)
	e.up.Push(t, "org/oci-img:v1", oci)
	e.up.PushIndex(t, "org/multi:v1", idx)
	e.up.ResetCounts()

	for _, tc := range []struct{ name, ref string }{
		{"docker image via library/ short name", "docker-img:v1"},
		{"oci image", "org/oci-img:v1"},
		{"oci image via path host", "docker.io/org/oci-img:v1"},
		{"multi-arch index", "org/multi:v1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := remote.Get(e.ref(tc.ref))
			if err != nil {
				t.Fatal(err)
			}
			upRef := tc.ref
			switch tc.ref {
			case "docker-img:v1":
				upRef = "library/docker-img:v1"
			case "docker.io/org/oci-img:v1":
				upRef = "org/oci-img:v1"
			}
			want, err := remote.Get(e.up.Ref(t, upRef))
			if err != nil {
				t.Fatal(err)
			}
			if got.Digest != want.Digest || !bytes.Equal(got.Manifest, want.Manifest) || got.MediaType != want.MediaType {
				t.Fatalf("manifest differs: got %s %s, want %s %s", got.Digest, got.MediaType, want.Digest, want.MediaType)
			}
			if got.MediaType.IsIndex() {
				ii, err := got.ImageIndex()
				if err != nil {
					t.Fatal(err)
				}
				if err := validate.Index(ii); err != nil {
					t.Fatalf("index does not validate: %v", err)
				}
				return
			}
			img, err := got.Image()
			if err != nil {
				t.Fatal(err)
			}
			if err := validate.Image(img); err != nil {
				t.Fatalf("image does not validate: %v", err)
			}
		})
	}
	_ = arch
	firstBlobGets := e.up.Count(testenv.BlobGet)
	if firstBlobGets == 0 {
		t.Fatal("cold pulls made no upstream blob request")
	}
	e.up.ResetCounts()
	for _, ref := range []string{"docker-img:v1", "org/oci-img:v1", "org/multi:v1"} {
		d, err := remote.Get(e.ref(ref))
		if err != nil {
			t.Fatal(err)
		}
		if d.MediaType.IsIndex() {
			ii, _ := d.ImageIndex()
			if err := validate.Index(ii); err != nil {
				t.Fatal(err)
			}
			continue
		}
		img, _ := d.Image()
		if err := validate.Image(img); err != nil {
			t.Fatal(err)
		}
	}
	if n := e.up.Count(testenv.BlobGet); n != 0 {
		t.Fatalf("warm pull made %d upstream blob GETs, want 0", n)
	}
	if n := e.up.Count(testenv.ManifestGet); n != 0 {
		t.Fatalf("warm pull within the tag TTL made %d upstream manifest GETs, want 0", n)
	}
}

// TestManifestHeaders checks what containerd relies on: HEAD by tag carries
// the real media type, digest and length; ns answers carry OCI-Namespace.
func TestManifestHeaders(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	img := testenv.DockerImage(t, 1, 1024)
	e.up.Push(t, "library/alpine:latest", img)
	want, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := img.RawManifest()
	ctx := context.Background()
	for _, path := range []string{
		"/v2/library/alpine/manifests/latest?ns=docker.io",
		"/v2/library/alpine/manifests/latest?ns=index.docker.io",
		"/v2/alpine/manifests/latest",
		"/v2/docker.io/library/alpine/manifests/latest",
		"/v2/library/alpine/manifests/" + want.String() + "?ns=docker.io",
	} {
		resp := e.get(ctx, http.MethodHead, path, nil)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("HEAD %s: %d", path, resp.StatusCode)
		}
		if got := resp.Header.Get("Docker-Content-Digest"); got != want.String() {
			t.Errorf("HEAD %s: digest %q, want %q", path, got, want)
		}
		if got := resp.Header.Get("Content-Type"); got != "application/vnd.docker.distribution.manifest.v2+json" {
			t.Errorf("HEAD %s: content type %q", path, got)
		}
		if resp.ContentLength != int64(len(raw)) {
			t.Errorf("HEAD %s: length %d, want %d", path, resp.ContentLength, len(raw))
		}
		ns := resp.Header.Get("OCI-Namespace")
		if (ns == "docker.io") != bytes.Contains([]byte(path), []byte("ns=")) {
			t.Errorf("HEAD %s: OCI-Namespace %q", path, ns)
		}
	}
}

// TestHeadNeverDownloads checks that HEAD of an uncached blob asks the
// upstream with HEAD only.
func TestHeadNeverDownloads(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	img, layer := testenv.RawBlobImage(t, 1<<20, 7)
	e.up.Push(t, "library/big:v1", img)
	d, _ := layer.Digest()
	e.up.ResetCounts()
	resp := e.get(context.Background(), http.MethodHead, "/v2/library/big/blobs/"+d.String(), nil)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.ContentLength != 1<<20 {
		t.Fatalf("HEAD blob: %d, length %d", resp.StatusCode, resp.ContentLength)
	}
	if n := e.up.Count(testenv.BlobGet); n != 0 {
		t.Fatalf("HEAD started %d upstream blob GETs", n)
	}
	if _, err := e.store.StatBlob(context.Background(), digestOf(d)); err == nil {
		t.Fatal("HEAD cached the blob")
	}
}

// TestRangeOnMiss asks for a byte range of an uncached blob.
func TestRangeOnMiss(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	data := testenv.RandomBytes(3<<20, 11)
	img, layer := testenv.RawBlobImage(t, 3<<20, 11)
	e.up.Push(t, "library/ranged:v1", img)
	d, _ := layer.Digest()
	hdr := http.Header{"Range": {"bytes=1000000-1000099"}}
	resp := e.get(context.Background(), http.MethodGet, "/v2/library/ranged/blobs/"+d.String(), hdr)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusPartialContent {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if !bytes.Equal(body, data[1000000:1000100]) {
		t.Fatal("range bytes differ")
	}
	if got := resp.Header.Get("Content-Range"); got != "bytes 1000000-1000099/3145728" {
		t.Fatalf("Content-Range %q", got)
	}
}

func digestOf(h v1.Hash) digest.Digest { return digest.Digest(h.String()) }
