package main

import (
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/opencontainers/go-digest"

	"github.com/stowage/stowage/config"
	"github.com/stowage/stowage/storage"
	"github.com/stowage/stowage/storage/storagetest"
)

// TestServeS3 runs "serve" with storage.driver: s3 on a real S3-compatible
// server (SeaweedFS), the config written as a distribution registry's
// storage.s3 section with the secrets in a file and the environment. An
// image pulled through it is verified byte for byte, lands in the bucket
// (another Store on the bucket sees every blob), and a second pull is
// served from the bucket without the upstream.
func TestServeS3(t *testing.T) {
	s3srv := storagetest.StartS3(t)
	bucket := s3srv.NewBucket(t)
	upSrv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(upSrv.Close)
	up, dgst := upSrv.URL, pushRandom(t, upSrv, 1<<20, 3)

	dir := t.TempDir()
	secretFile := filepath.Join(dir, "s3-secret")
	if err := os.WriteFile(secretFile, []byte("stowage-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("STOWAGE_TEST_S3_ACCESS", "stowage")
	cfg := fmt.Sprintf(`storage:
  driver: s3
  s3:
    bucket: %s
    region: us-east-1
    regionendpoint: %s
    forcepathstyle: true
    secure: false
    encrypt: false
    rootdirectory: /cache
    chunksize: 5242880
    accesskey_env: STOWAGE_TEST_S3_ACCESS
    secretkey_file: %s
upstreams:
  docker.io:
    endpoints: [%q]
log:
  level: error
`, bucket, s3srv.Endpoint, secretFile, up)
	addr := startServe(t, "--config", writeConfig(t, dir, cfg))
	layers := pullImage(t, addr+"/team/app:v1", dgst)

	// The blobs are in the bucket, where any other replica finds them.
	params := s3srv.DriverParameters(bucket, "/cache")
	other, err := storage.NewS3(t.Context(), params)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	for _, d := range layers {
		if _, err := other.StatBlob(t.Context(), d); err != nil {
			t.Errorf("blob %s not in the bucket: %v", d, err)
		}
	}

	// A hit is served from the bucket: the upstream is gone.
	upSrv.Close()
	pullImage(t, addr+"/team/app:v1", dgst)

	// storage.redirect: true opens a store that presigns blob URLs.
	rcfg := config.Default()
	rcfg.Storage = config.Storage{Driver: "s3", S3: params, Redirect: true}
	if err := rcfg.Validate(); err != nil {
		t.Fatal(err)
	}
	rs, err := openStore(rcfg)
	if err != nil {
		t.Fatal(err)
	}
	defer rs.Close()
	u, err := rs.BlobURL(httptest.NewRequest(http.MethodGet, "/v2/team/app/blobs/"+layers[0].String(), nil), layers[0])
	if err != nil || !strings.HasPrefix(u, s3srv.Endpoint+"/"+bucket+"/cache/") {
		t.Fatalf("BlobURL with storage.redirect = %q, %v", u, err)
	}
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.ContentLength <= 0 {
		t.Fatalf("GET of the presigned URL: %s, %d bytes", resp.Status, resp.ContentLength)
	}

	// A server with storage.redirect: true sends a cached blob's GET to
	// the bucket (the client follows and gets the right bytes) and still
	// answers HEAD itself.
	redirCfg := filepath.Join(dir, "redirect.yaml")
	if err := os.WriteFile(redirCfg, []byte(strings.Replace(cfg, "storage:\n", "storage:\n  redirect: true\n", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	raddr := startServe(t, "--config", redirCfg)
	blobURL := "http://" + raddr + "/v2/team/app/blobs/" + layers[0].String()
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err = noFollow.Get(blobURL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if loc := resp.Header.Get("Location"); resp.StatusCode != http.StatusTemporaryRedirect || !strings.HasPrefix(loc, s3srv.Endpoint+"/"+bucket+"/cache/") {
		t.Fatalf("GET with storage.redirect: %s, Location %q", resp.Status, loc)
	}
	resp, err = http.Get(blobURL)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK || digest.FromBytes(body) != layers[0] {
		t.Fatalf("followed redirect: %s, %d bytes, digest %s, want %s (%v)", resp.Status, len(body), digest.FromBytes(body), layers[0], err)
	}
	resp, err = noFollow.Head(blobURL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("HEAD with storage.redirect: %s", resp.Status)
	}
}

// pullImage pulls the image ref (insecure, e.g. addr+"/team/app:v1"),
// checks that its manifest digest is want, reads every layer fully (each
// verified at EOF) and returns the layers' digests.
func pullImage(t *testing.T, ref, want string) []digest.Digest {
	t.Helper()
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(r)
	if err != nil {
		t.Fatal(err)
	}
	if d, _ := img.Digest(); d.String() != want {
		t.Fatalf("pulled %s, want %s", d, want)
	}
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	var ds []digest.Digest
	for _, l := range layers {
		ds = append(ds, readLayer(t, l))
	}
	return ds
}

// readLayer reads a layer fully (go-containerregistry verifies its digest
// at EOF) and returns its digest.
func readLayer(t *testing.T, l v1.Layer) digest.Digest {
	t.Helper()
	h, err := l.Digest()
	if err != nil {
		t.Fatal(err)
	}
	rc, err := l.Compressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if _, err := io.Copy(io.Discard, rc); err != nil {
		t.Fatalf("layer %s: %v", h, err)
	}
	return digest.Digest(h.String())
}
