package upstream

import (
	"bytes"
	"errors"
	"io"
	"sync"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/stowage/stowage/upstream/internal/testregistry"
)

func TestRealRegistryAnonymous(t *testing.T) {
	t.Parallel()
	reg := testregistry.Start(t)
	img := reg.SeedImage(t, "library/alpine", "3.20", 2, 2048)
	reg.SeedImage(t, "library/alpine", "3.21", 1, 512)
	c := newClient(t, testConfig(reg.URL))
	ctx := t.Context()

	raw, err := img.RawManifest()
	if err != nil {
		t.Fatal(err)
	}
	want, _ := img.Digest()
	m, err := c.GetManifest(ctx, "library/alpine", "3.20", nil)
	if err != nil {
		t.Fatalf("GetManifest: %v", err)
	}
	if m.Digest.String() != want.String() || !bytes.Equal(m.Body, raw) || m.Size != int64(len(raw)) {
		t.Fatalf("manifest = %s (%d bytes), want %s", m.Digest, m.Size, want)
	}
	if m.MediaType != "application/vnd.oci.image.manifest.v1+json" && m.MediaType != "application/vnd.docker.distribution.manifest.v2+json" {
		t.Fatalf("media type %q", m.MediaType)
	}
	byDigest, err := c.GetManifest(ctx, "library/alpine", want.String(), nil)
	if err != nil || byDigest.Digest.String() != want.String() {
		t.Fatalf("GetManifest by digest: %v", err)
	}
	h, err := c.HeadManifest(ctx, "library/alpine", "3.20", nil)
	if err != nil || h.Digest.String() != want.String() || h.Body != nil || h.Size != int64(len(raw)) {
		t.Fatalf("HeadManifest = %+v, %v", h, err)
	}

	layers, _ := img.Layers()
	ld, _ := layers[0].Digest()
	rc, _ := layers[0].Compressed()
	wantBlob, _ := io.ReadAll(rc)
	size, err := c.HeadBlob(ctx, "library/alpine", digest.Digest(ld.String()))
	if err != nil || size != int64(len(wantBlob)) {
		t.Fatalf("HeadBlob = %d, %v", size, err)
	}
	b, err := c.GetBlob(ctx, "library/alpine", digest.Digest(ld.String()), 0)
	if err != nil {
		t.Fatalf("GetBlob: %v", err)
	}
	got, err := io.ReadAll(b.Body)
	b.Body.Close()
	if err != nil || !bytes.Equal(got, wantBlob) || b.Offset != 0 || b.Size != int64(len(wantBlob)) {
		t.Fatalf("GetBlob: %d bytes, offset %d, size %d, %v", len(got), b.Offset, b.Size, err)
	}

	// Resume: a real registry answers 206 with a matching Content-Range.
	b, err = c.GetBlob(ctx, "library/alpine", digest.Digest(ld.String()), 100)
	if err != nil {
		t.Fatalf("GetBlob(100): %v", err)
	}
	got, err = io.ReadAll(b.Body)
	b.Body.Close()
	if err != nil || b.Offset != 100 || !bytes.Equal(got, wantBlob[100:]) || b.Size != int64(len(wantBlob)) {
		t.Fatalf("GetBlob(100): offset %d size %d, %d bytes, %v", b.Offset, b.Size, len(got), err)
	}

	tags, err := c.Tags(ctx, "library/alpine", 1, "")
	if err != nil || len(tags.Tags) != 1 || tags.Tags[0] != "3.20" || tags.Next != "3.20" {
		t.Fatalf("Tags page 1 = %+v, %v", tags, err)
	}
	tags, err = c.Tags(ctx, "library/alpine", 1, tags.Next)
	if err != nil || len(tags.Tags) != 1 || tags.Tags[0] != "3.21" {
		t.Fatalf("Tags page 2 = %+v, %v", tags, err)
	}

	_, err = c.GetManifest(ctx, "library/alpine", "nope", nil)
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing tag: %v, want ErrNotFound", err)
	}
	_, err = c.GetManifest(ctx, "library/nothere", "latest", nil)
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing repo: %v, want ErrNotFound", err)
	}
	// distribution v3 has no referrers API: an old registry's 404.
	_, err = c.Referrers(ctx, "library/alpine", digest.Digest(want.String()), "")
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("Referrers on old registry: %v, want ErrNotFound", err)
	}
}

func TestRealRegistryIndex(t *testing.T) {
	t.Parallel()
	reg := testregistry.Start(t)
	idx := reg.SeedIndex(t, "org/multi", "v1", 2)
	c := newClient(t, testConfig(reg.URL))
	want, _ := idx.Digest()
	mt, _ := idx.MediaType()
	m, err := c.GetManifest(t.Context(), "org/multi", "v1", nil)
	if err != nil || m.Digest.String() != want.String() || m.MediaType != string(mt) {
		t.Fatalf("GetManifest(index) = %+v, %v; want %s %s", m, err, want, mt)
	}
}

func TestTokenAuthSharesOneTokenPerScope(t *testing.T) {
	t.Parallel()
	reg := testregistry.Start(t, testregistry.WithTokenAuth(testregistry.TokenAuth{Username: "alice", Password: "s3cret-pw"}))
	img := reg.SeedImage(t, "team/app", "v1", 1, 1024)
	layers, _ := img.Layers()
	ld, _ := layers[0].Digest()
	cfg := testConfig(reg.URL)
	cfg.Auth.Username, cfg.Auth.Password = "alice", "s3cret-pw"
	c := newClient(t, cfg)

	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for i := range 20 {
		wg.Go(func() {
			if i%2 == 0 {
				_, err := c.GetManifest(t.Context(), "team/app", "v1", nil)
				errs <- err
				return
			}
			b, err := c.GetBlob(t.Context(), "team/app", digest.Digest(ld.String()), 0)
			if err == nil {
				_, err = io.Copy(io.Discard, b.Body)
				b.Body.Close()
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := reg.TokenRequests("repository:team/app:pull"); n != 1 {
		t.Fatalf("token requests for the scope = %d, want 1", n)
	}
}
