package prefetch_test

import (
	"bytes"
	"errors"
	"io"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/opencontainers/go-digest"

	"github.com/stowage/stowage/config/imagelist"
	"github.com/stowage/stowage/proxy/internal/testenv"
	"github.com/stowage/stowage/proxy/prefetch"
	"github.com/stowage/stowage/storage"
)

// TestSharedLayersFetchedOnce: 50 images sharing base layers cost one
// upstream GET per unique blob; a second run costs none; pins name them.
func TestSharedLayersFetchedOnce(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil, "")
	refs, unique := sharedImages(t, e.up, 50)
	e.up.ResetCounts()
	eng := e.engine(prefetch.WithConcurrency(4))
	req := prefetch.Request{Lists: []prefetch.NamedList{list(t, "images-list.txt", refs...)}}

	rep, err := eng.Run(t.Context(), req, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK() {
		t.Fatalf("report: %+v", rep)
	}
	if got := e.up.Count(testenv.BlobGet); got != unique {
		t.Fatalf("upstream blob GETs = %d, want %d (unique blobs)", got, unique)
	}
	if rep.Totals.Images != 50 || rep.Totals.Blobs != unique || rep.Totals.UpstreamBytes != rep.Totals.Bytes {
		t.Fatalf("totals: %+v", rep.Totals)
	}
	for _, im := range rep.Images {
		if im.Digest == "" || len(im.Blobs) != 4 || im.Bytes == 0 {
			t.Fatalf("image report: %+v", im)
		}
	}

	e.up.ResetCounts()
	rep2, err := eng.Run(t.Context(), req, nil)
	if err != nil || !rep2.OK() {
		t.Fatalf("second run: %v %+v", err, rep2)
	}
	if got := e.up.Count(testenv.BlobGet); got != 0 {
		t.Fatalf("second run made %d blob GETs", got)
	}
	if rep2.Totals.UpstreamBytes != 0 || rep2.Totals.CachedBytes != rep.Totals.Bytes {
		t.Fatalf("second run totals: %+v", rep2.Totals)
	}

	pins, err := e.store.Pins(t.Context())
	if err != nil || len(pins) != 1 || pins[0].Name != "images-list.txt" || len(pins[0].Images) != 50 {
		t.Fatalf("pins: %v %+v", err, pins)
	}
	for _, im := range rep.Images {
		for _, d := range append(im.Blobs, im.Digest) {
			if !pins[0].Contains(d) {
				t.Fatalf("pin lacks %s", d)
			}
		}
		// Every repository can serve its blobs (stock-registry layout).
		for _, d := range im.Blobs {
			if ok, err := e.store.BlobLinked(t.Context(), im.Repository, d); err != nil || !ok {
				t.Fatalf("%s: blob %s not linked: %v", im.Repository, d, err)
			}
		}
	}
}

// TestPrefetchAndClientPullShareFill: a client pulling the image while the
// prefetch downloads it causes no second upstream GET.
func TestPrefetchAndClientPullShareFill(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil, "")
	img, _ := testenv.RawBlobImage(t, 256<<10, 7)
	e.up.Push(t, "team/slow:v1", img)
	e.up.ResetCounts()
	e.up.SetFault(testenv.SlowBlobs(16<<10, 15*time.Millisecond))
	srv := httptest.NewServer(e.proxy)
	defer srv.Close()

	eng := e.engine()
	var wg sync.WaitGroup
	var rep *prefetch.Report
	var runErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		rep, runErr = eng.Run(t.Context(), prefetch.Request{Images: []string{"docker.io/team/slow:v1"}}, nil)
	}()
	// Wait for the prefetch to have started the layer download.
	deadline := time.Now().Add(10 * time.Second)
	for e.up.Count(testenv.BlobGet) < 2 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	ref, err := name.ParseReference(strings.TrimPrefix(srv.URL, "http://")+"/team/slow:v1", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	pulled, err := remote.Image(ref, remote.WithContext(t.Context()))
	if err != nil {
		t.Fatal(err)
	}
	layers, err := pulled.Layers()
	if err != nil {
		t.Fatal(err)
	}
	rc, err := layers[0].Compressed()
	if err != nil {
		t.Fatal(err)
	}
	n, err := io.Copy(io.Discard, rc)
	rc.Close()
	if err != nil || n != 256<<10 {
		t.Fatalf("client read %d: %v", n, err)
	}
	wg.Wait()
	if runErr != nil || !rep.OK() {
		t.Fatalf("prefetch: %v %+v", runErr, rep)
	}
	if got := e.up.Count(testenv.BlobGet); got != 2 {
		t.Fatalf("upstream blob GETs = %d, want 2 (config + layer once)", got)
	}
}

// TestPlatformFilter: only the selected child's blobs are fetched and the
// index is cached byte-identical.
func TestPlatformFilter(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil, "")
	idx, imgs := testenv.MultiArchIndex(t)
	e.up.PushIndex(t, "team/multi:v1", idx)
	e.up.ResetCounts()

	rep, err := e.engine().Run(t.Context(), prefetch.Request{
		Images: []string{"docker.io/team/multi:v1"}, Platforms: []string{"linux/arm64/v8"}}, nil)
	if err != nil || !rep.OK() {
		t.Fatalf("%v %+v", err, rep)
	}
	if got := e.up.Count(testenv.BlobGet); got != 3 {
		t.Fatalf("blob GETs = %d, want 3 (arm64 config + 2 layers)", got)
	}
	im := rep.Images[0]
	if len(im.Platforms) != 1 || im.Platforms[0] != "linux/arm64" || len(im.Manifests) != 2 {
		t.Fatalf("image report: %+v", im)
	}
	upRaw, err := remote.Get(e.up.Ref(t, "team/multi:v1"))
	if err != nil {
		t.Fatal(err)
	}
	tag, err := e.store.GetTag(t.Context(), "docker.io/team/multi", "v1")
	if err != nil || tag.Digest.String() != upRaw.Digest.String() || im.Digest != tag.Digest {
		t.Fatalf("cached index %v (%v), upstream %s", tag.Digest, err, upRaw.Digest)
	}
	body, err := e.store.GetManifest(t.Context(), "docker.io/team/multi", tag.Digest)
	if err != nil || !bytes.Equal(body, upRaw.Manifest) {
		t.Fatalf("cached index bytes differ: %v", err)
	}
	for arch, img := range imgs {
		layers, _ := img.Layers()
		h, _ := layers[0].Digest()
		_, err := e.store.StatBlob(t.Context(), digest.Digest(h.String()))
		if cached := err == nil; cached != (arch == "arm64") {
			t.Fatalf("%s layer cached = %v", arch, cached)
		}
	}

	// A platform the index lacks is a permanent failure, not retried.
	rep, err = e.engine().Run(t.Context(), prefetch.Request{
		Images: []string{"docker.io/team/multi:v1"}, Platforms: []string{"linux/s390x"}}, nil)
	if err != nil || rep.OK() || rep.Images[0].Attempts != 1 || !strings.Contains(rep.Images[0].Error, "no manifest") {
		t.Fatalf("s390x: %v %+v", err, rep.Images)
	}
	if _, err := e.engine().Run(t.Context(), prefetch.Request{Platforms: []string{"not a/platform/at/all"}}, nil); !errors.Is(err, prefetch.ErrInvalidRequest) {
		t.Fatalf("bad platform: %v", err)
	}

	// A single-platform arm64 image: filtered out for amd64 after its
	// config alone (as containerd would refuse it), fetched for arm64.
	e.up.Push(t, "team/armonly:v1", imgs["arm64"])
	e.up.ResetCounts()
	rep, err = e.engine().Run(t.Context(), prefetch.Request{
		Images: []string{"docker.io/team/armonly:v1"}, Platforms: []string{"linux/amd64"}}, nil)
	if err != nil || rep.OK() || rep.Images[0].Attempts != 1 || !strings.Contains(rep.Images[0].Error, "linux/arm64") {
		t.Fatalf("arm64 image for amd64: %v %+v", err, rep.Images)
	}
	if got := e.up.Count(testenv.BlobGet); got != 0 {
		t.Fatalf("blob GETs = %d, want 0 (the arm64 config is cached from the index run)", got)
	}
	rep, err = e.engine().Run(t.Context(), prefetch.Request{
		Images: []string{"docker.io/team/armonly:v1"}, Platforms: []string{"linux/arm64"}}, nil)
	if err != nil || !rep.OK() || rep.Images[0].Platforms[0] != "linux/arm64" {
		t.Fatalf("arm64 image for arm64: %v %+v", err, rep.Images)
	}

	// A fresh single-platform amd64 image for arm64: only its config is
	// fetched, and an accepted image accounts its config as fetched.
	amd := testenv.OCIImage(t, 2, 4096)
	cf, _ := amd.ConfigFile()
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", "amd64"
	amd, _ = mutate.ConfigFile(amd, cf)
	e.up.Push(t, "team/amdonly:v1", amd)
	e.up.ResetCounts()
	rep, _ = e.engine().Run(t.Context(), prefetch.Request{
		Images: []string{"docker.io/team/amdonly:v1"}, Platforms: []string{"linux/arm64"}}, nil)
	if rep.OK() || e.up.Count(testenv.BlobGet) != 1 {
		t.Fatalf("amd64 image for arm64: %d blob GETs, %+v", e.up.Count(testenv.BlobGet), rep.Images)
	}
	rep, err = e.engine().Run(t.Context(), prefetch.Request{
		Images: []string{"docker.io/team/amdonly:v1"}, Platforms: []string{"linux/amd64"}}, nil)
	if err != nil || !rep.OK() || e.up.Count(testenv.BlobGet) != 3 || rep.Images[0].UpstreamBytes+rep.Images[0].CachedBytes != rep.Images[0].Bytes {
		t.Fatalf("amd64 image for amd64: %v, %d blob GETs, %+v", err, e.up.Count(testenv.BlobGet), rep.Images)
	}
	// Accepted on a cold cache: the config fetched by the platform check
	// counts as upstream bytes like the layers.
	cf2 := cf.DeepCopy()
	cf2.Author = "a config of its own"
	amd2, _ := mutate.ConfigFile(testenv.OCIImage(t, 1, 4096), cf2)
	e.up.Push(t, "team/amd2:v1", amd2)
	rep, err = e.engine().Run(t.Context(), prefetch.Request{
		Images: []string{"docker.io/team/amd2:v1"}, Platforms: []string{"linux/amd64"}}, nil)
	if err != nil || !rep.OK() || rep.Images[0].UpstreamBytes != rep.Images[0].Bytes || rep.Images[0].CachedBytes != 0 {
		t.Fatalf("cold amd64 image: %v %+v", err, rep.Images)
	}
}

// TestKeepGoingAndRules: a missing image fails alone (not retried), a
// skopeo-sync regex rule is expanded from the upstream tags, list problems
// and ignored credentials are reported.
func TestKeepGoingAndRules(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil, "")
	for _, tag := range []string{"1.0", "1.1", "2.0"} {
		e.up.Push(t, "team/ruled:"+tag, testenv.DockerImage(t, 1, 1024))
	}
	yaml := `docker.io:
  images-by-tag-regex:
    team/ruled: ^1\.
  images:
    team/missing: ["v1"]
  credentials:
    username: u
    password: secret-pw
`
	l, _ := imagelist.ParseSkopeoSync("sync.yaml", strings.NewReader(yaml))
	bad := list(t, "bad.txt", "docker.io/team/x@sha256:111111")
	rep, err := e.engine().Run(t.Context(), prefetch.Request{Lists: []prefetch.NamedList{{Name: "sync.yaml", List: l}, bad}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, im := range rep.Images {
		got = append(got, im.Ref)
		if strings.Contains(im.Ref, "missing") {
			if im.Error == "" || im.Attempts != 1 {
				t.Fatalf("missing image: %+v", im)
			}
		} else if im.Error != "" {
			t.Fatalf("%s: %s", im.Ref, im.Error)
		}
	}
	if strings.Join(got, " ") != "docker.io/team/missing:v1 docker.io/team/ruled:1.0 docker.io/team/ruled:1.1" {
		t.Fatalf("images: %v", got)
	}
	if rep.Totals.Failed != 1 || len(rep.Problems) != 2 {
		t.Fatalf("totals %+v problems %q", rep.Totals, rep.Problems)
	}
	var text bytes.Buffer
	if err := rep.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(text.String(), "secret-pw") || !strings.Contains(text.String(), "configure credentials") {
		t.Fatalf("text report:\n%s", text.String())
	}
	// The failed image does not unpin anything; the rule's images are pinned.
	pin, err := e.store.GetPin(t.Context(), "sync.yaml")
	if err != nil || len(pin.Images) != 2 {
		t.Fatalf("pin: %v %+v", err, pin)
	}
	if _, err := e.store.GetPin(t.Context(), "bad.txt"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("empty list pinned: %v", err)
	}
}

// countingObserver records BlobProgress calls on top of the counters.
type countingObserver struct {
	prefetch.Progress
	calls atomic.Int64
}

func (c *countingObserver) BlobProgress(ref string, n int64) {
	c.calls.Add(1)
	c.Progress.BlobProgress(ref, n)
}

// TestByteProgress: progress moves while a large blob downloads (not only
// when it is done), and the bytes add up to exactly the image's size.
func TestByteProgress(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil, "")
	img, _ := testenv.RawBlobImage(t, 4<<20, 41)
	e.up.Push(t, "team/big:v1", img)
	e.up.SetFault(testenv.SlowBlobs(256<<10, time.Millisecond))
	obs := &countingObserver{}
	rep, err := e.engine().Run(t.Context(), prefetch.Request{Images: []string{"docker.io/team/big:v1"}}, obs)
	if err != nil || !rep.OK() {
		t.Fatalf("%v %+v", err, rep)
	}
	s := obs.Snapshot()
	if obs.calls.Load() < 4 {
		t.Fatalf("BlobProgress called %d times for a 4 MiB download in 256 KiB chunks", obs.calls.Load())
	}
	if s.BytesDone != s.BytesPlanned || s.BytesDone != rep.Images[0].Bytes || s.BytesUpstream != s.BytesDone {
		t.Fatalf("progress %+v, report bytes %d", s, rep.Images[0].Bytes)
	}
}
