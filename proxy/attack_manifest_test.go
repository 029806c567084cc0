package proxy_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/stowage/stowage/proxy/internal/testenv"
	"github.com/stowage/stowage/storage"
)

// Adversarial manifest tests: whatever the upstream claims, a manifest
// answer is 200 only with a body whose digest is the Docker-Content-Digest
// it is served with (and, by digest, the digest asked for).

// consistent fails unless r is a 200 whose body hashes to its digest header.
func consistent(t *testing.T, what string, r manifestResp) {
	t.Helper()
	if r.status != http.StatusOK {
		t.Fatalf("%s: status %d code %s", what, r.status, r.code)
	}
	if got := digest.FromBytes(r.body); got.String() != r.digest {
		t.Fatalf("%s: served with Docker-Content-Digest %s, body hashes to %s", what, r.digest, got)
	}
}

// TestAttackManifestWrongDigest: asked for manifest A by digest, the
// upstream sends manifest B (valid, with its own digest header or none).
// The client gets an error, nothing is stored under A, and once the
// upstream behaves A is served.
func TestAttackManifestWrongDigest(t *testing.T) {
	t.Parallel()
	for _, strip := range []bool{false, true} {
		e := newEnv(t, envOptions{})
		imgA, imgB := testenv.OCIImage(t, 1, 512), testenv.OCIImage(t, 2, 512)
		e.up.Push(t, "library/swap:a", imgA)
		e.up.Push(t, "library/swap:b", imgB)
		dA, dB := manifestDigest(t, imgA), manifestDigest(t, imgB)
		e.up.SetFault(testenv.ManifestSwap(dA.String(), dB.String(), strip))
		r := e.manifest(t, http.MethodGet, "library/swap@"+dA.String())
		if r.status == http.StatusOK {
			t.Fatalf("strip %v: 200 for %s with a body hashing to %s", strip, dA, digest.FromBytes(r.body))
		}
		if _, err := e.store.ReadManifest(context.Background(), "docker.io/library/swap", dA, 4<<20); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("strip %v: something stored under %s: %v", strip, dA, err)
		}
		e.up.SetFault(nil)
		r = e.manifest(t, http.MethodGet, "library/swap@"+dA.String())
		consistent(t, "after the upstream recovered", r)
		if r.digest != dA.String() {
			t.Fatalf("strip %v: served %s for %s", strip, r.digest, dA)
		}
	}
}

// TestAttackManifestTypeFromBody: the upstream labels an index as an image
// manifest. The proxy serves the type the bytes declare, with the digest
// of the bytes.
func TestAttackManifestTypeFromBody(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	idx, _ := testenv.MultiArchIndex(t)
	e.up.PushIndex(t, "library/label:v1", idx)
	want := manifestDigest(t, idx)
	e.up.SetFault(testenv.ManifestContentType(v1.MediaTypeImageManifest))
	r := e.manifest(t, http.MethodGet, "library/label:v1")
	consistent(t, "mislabelled index", r)
	if r.digest != want.String() {
		t.Fatalf("served %s, want %s", r.digest, want)
	}
	if !strings.Contains(string(r.body), v1.MediaTypeImageIndex) || r.ctype == v1.MediaTypeImageManifest {
		t.Fatalf("an index served as %q", r.ctype)
	}
}

// TestAttackHugeManifest: a 5 MiB "manifest" (over the 4 MiB cap), sent
// chunked, with its true length, or with a Content-Length lying low or
// high. Never served as 200, nothing stored for the tag.
func TestAttackHugeManifest(t *testing.T) {
	t.Parallel()
	body := []byte(`{"schemaVersion":2,"mediaType":"` + v1.MediaTypeImageManifest + `","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:` +
		strings.Repeat("a", 64) + `","size":2},"layers":[],"annotations":{"pad":"` + strings.Repeat("x", 5<<20) + `"}}`)
	for _, length := range []int64{-1, int64(len(body)), 1000, int64(len(body)) + 1000} {
		e := newEnv(t, envOptions{})
		e.up.SetFault(testenv.ManifestBody(v1.MediaTypeImageManifest, body, length))
		r := e.manifest(t, http.MethodGet, "library/huge:v1")
		if r.status == http.StatusOK {
			t.Fatalf("Content-Length %d: 200 with %d bytes", length, len(r.body))
		}
		if _, err := e.store.GetTag(context.Background(), "docker.io/library/huge", "v1"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("Content-Length %d: the tag was recorded: %v", length, err)
		}
		if _, err := e.store.ReadManifest(context.Background(), "docker.io/library/huge", digest.FromBytes(body), 8<<20); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("Content-Length %d: the manifest was stored: %v", length, err)
		}
	}
}

// TestAttackTagHeadGetDisagree: a stale tag is revalidated. The HEAD
// names one digest, the GET answers another; or the GET's digest header
// contradicts its body. Every answer's body matches its digest header;
// a contradicting GET leaves the stale copy in place.
func TestAttackTagHeadGetDisagree(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	img1, img2, img3 := testenv.OCIImage(t, 1, 256), testenv.OCIImage(t, 1, 257), testenv.OCIImage(t, 1, 258)
	d1, d2, d3 := manifestDigest(t, img1), manifestDigest(t, img2), manifestDigest(t, img3)
	e.up.Push(t, "library/flip:v1", img1)
	e.up.Push(t, "library/flip:other", img3)
	e.pullTag(t, "library/flip:v1", d1)

	// The tag moves to img2; the HEAD claims img3.
	e.up.Push(t, "library/flip:v1", img2)
	e.clock.Advance(e.cfg.Cache.TagTTL + time.Second)
	e.up.SetFault(testenv.ManifestHeadDigest(d3.String()))
	r := e.manifest(t, http.MethodGet, "library/flip:v1")
	consistent(t, "HEAD says img3, GET sends img2", r)
	if r.digest != d2.String() {
		t.Fatalf("served %s, want the GET's %s (img1 %s, img3 %s)", r.digest, d2, d1, d3)
	}

	// The tag moves back to img1; the GET's digest header claims img3.
	e.up.Push(t, "library/flip:v1", img1)
	e.clock.Advance(e.cfg.Cache.TagTTL + time.Second)
	e.up.SetFault(testenv.ManifestGetDigest(d3.String()))
	r = e.manifest(t, http.MethodGet, "library/flip:v1")
	consistent(t, "GET header img3, body img1", r)
	if r.digest != d2.String() {
		t.Fatalf("served %s, want the stale %s (the contradicting GET is not the upstream's word)", r.digest, d2)
	}
	if tag, err := e.store.GetTag(context.Background(), "docker.io/library/flip", "v1"); err != nil || tag.Digest != d2 {
		t.Fatalf("stored tag %v %v, want %s", tag.Digest, err, d2)
	}
	// By digest, img1 is img1's bytes (the GET's header lie changes
	// nothing: a by-digest answer is checked against the digest asked for).
	r = e.manifest(t, http.MethodGet, "library/flip@"+d1.String())
	consistent(t, "img1 by digest", r)
	if r.digest != d1.String() {
		t.Fatalf("by digest %s: served %s", d1, r.digest)
	}
}
