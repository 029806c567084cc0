package proxy_test

import (
	"bufio"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/stowage/stowage/config"
	"github.com/stowage/stowage/proxy/internal/testenv"
	"github.com/stowage/stowage/storage"
)

const mediaTypeDockerManifest = "application/vnd.docker.distribution.manifest.v2+json"

// metricValue reads one sample ("name{labels}") from the proxy's /metrics;
// -1 when absent.
func (e *env) metricValue(t *testing.T, sample string) float64 {
	t.Helper()
	resp := e.get(t.Context(), http.MethodGet, "/metrics", nil)
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), sample+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatal(err)
			}
			return f
		}
	}
	return -1
}

// pullTag fetches repo:tag through e and checks the digest.
func (e *env) pullTag(t *testing.T, repoTag string, want digest.Digest) manifestResp {
	t.Helper()
	r := e.manifest(t, http.MethodGet, repoTag)
	if r.status != http.StatusOK || r.digest != want.String() {
		t.Fatalf("GET %s: status %d digest %s code %s; want 200 %s", repoTag, r.status, r.digest, r.code, want)
	}
	return r
}

// TestInterstitialNeverCached: a TLS-inspecting proxy's 200 text/html policy
// page is neither stored nor served as a manifest; a cached tag is served
// stale instead.
func TestInterstitialNeverCached(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	e.up.SetFault(testenv.ManifestInterstitial())
	r := e.manifest(t, http.MethodGet, "library/portal:v1")
	if r.status != http.StatusBadGateway || r.code != "MANIFEST_INVALID" {
		t.Fatalf("policy page: status %d type %q code %q; want 502 MANIFEST_INVALID", r.status, r.ctype, r.code)
	}
	if _, err := e.store.GetTag(t.Context(), "docker.io/library/portal", "v1"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("policy page stored as a tag: %v", err)
	}

	// A cached tag past its TTL behind the same page: the stale copy.
	e.up.SetFault(nil)
	img := testenv.DockerImage(t, 1, 256)
	e.up.Push(t, "library/portal:v2", img)
	want := manifestDigest(t, img)
	e.pullTag(t, "library/portal:v2", want)
	e.up.SetFault(testenv.ManifestInterstitial())
	e.clock.Advance(time.Hour)
	if r := e.pullTag(t, "library/portal:v2", want); r.ctype != mediaTypeDockerManifest {
		t.Fatalf("stale copy served as %q", r.ctype)
	}
}

// TestManifestTypeStableAcrossRestart: a manifest an old registry sends as
// application/json is served with the type its bytes declare, the same
// before and after a restart.
func TestManifestTypeStableAcrossRestart(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	img := testenv.DockerImage(t, 1, 256)
	e.up.Push(t, "library/typed:v1", img)
	want := manifestDigest(t, img)
	e.up.SetFault(testenv.ManifestContentType("application/json"))
	if r := e.pullTag(t, "library/typed:v1", want); r.ctype != mediaTypeDockerManifest {
		t.Fatalf("first answer typed %q, want %q", r.ctype, mediaTypeDockerManifest)
	}
	store, err := storage.NewFilesystem(e.root)
	if err != nil {
		t.Fatal(err)
	}
	restarted := e.reopen(t, store, nil)
	if r := restarted.pullTag(t, "library/typed:v1", want); r.ctype != mediaTypeDockerManifest {
		t.Fatalf("after restart typed %q, want %q", r.ctype, mediaTypeDockerManifest)
	}
}

// TestHeadWithoutDigestFallsBackToGet: an upstream HEAD without
// Docker-Content-Digest makes the revalidation GET the tag, so a moved tag
// is seen after the TTL.
func TestHeadWithoutDigestFallsBackToGet(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	a, b := testenv.DockerImage(t, 1, 256), testenv.DockerImage(t, 1, 256)
	e.up.Push(t, "library/nohdr:v1", a)
	e.up.SetFault(testenv.StripHeaderOnManifestHead("Docker-Content-Digest"))
	e.pullTag(t, "library/nohdr:v1", manifestDigest(t, a))
	e.up.SetFault(nil)                  // the seeding client needs the header
	e.up.Push(t, "library/nohdr:v1", b) // the tag moves upstream
	e.up.SetFault(testenv.StripHeaderOnManifestHead("Docker-Content-Digest"))
	for _, after := range []time.Duration{6 * time.Minute, 24 * time.Hour} {
		e.clock.Advance(after)
		e.pullTag(t, "library/nohdr:v1", manifestDigest(t, b))
	}
}

// TestLayerIsNotAManifest: with the upstream down, a cached layer named as a
// manifest is MANIFEST_UNKNOWN, and a large one is not read at all.
func TestLayerIsNotAManifest(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	big := e.seedBlob("library/big:v1", 32<<20, 7)
	small := e.seedBlob("library/small:v1", 2048, 8)
	for repo, d := range map[string]digest.Digest{"big": big, "small": small} {
		resp := e.get(t.Context(), http.MethodGet, "/v2/library/"+repo+"/blobs/"+d.String(), nil)
		got, _, err := readAllHash(resp.Body)
		resp.Body.Close()
		if err != nil || got != d {
			t.Fatalf("warming %s: %v %s", d, err, got)
		}
	}
	e.up.Close()
	f, fd := e.reopenFaulty(t)
	for _, d := range []digest.Digest{big, small} {
		for _, method := range []string{http.MethodGet, http.MethodHead} {
			r := f.manifest(t, method, "library/anything@"+d.String())
			if r.status != http.StatusNotFound || (method == http.MethodGet && r.code != "MANIFEST_UNKNOWN") {
				t.Fatalf("%s layer %s as a manifest: status %d code %q (%d bytes)", method, d, r.status, r.code, len(r.body))
			}
		}
	}
	if n := fd.blobBytesRead.Load(); n > 2*2048 {
		t.Fatalf("read %d bytes of blob data; the 32 MiB layer must not be read", n)
	}
}

// TestTagWrittenByAnotherProcessIsSeen: a tag that another process (proxy
// import, prefetch, a replica) writes on the same root while the server runs
// is served within seconds, with the upstream unreachable.
func TestTagWrittenByAnotherProcessIsSeen(t *testing.T) {
	t.Parallel()
	writeTag := func(t *testing.T, e *env, img interface {
		RawManifest() ([]byte, error)
	}, d digest.Digest) {
		t.Helper()
		other, err := storage.NewFilesystem(e.root)
		if err != nil {
			t.Fatal(err)
		}
		defer other.Close()
		raw, err := img.RawManifest()
		if err != nil {
			t.Fatal(err)
		}
		if err := other.PutManifest(t.Context(), "docker.io/library/app", d, raw); err != nil {
			t.Fatal(err)
		}
		if err := other.PutTag(t.Context(), "docker.io/library/app", "v1", d, e.clock.Now()); err != nil {
			t.Fatal(err)
		}
	}
	t.Run("fresh", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, envOptions{})
		a, b := testenv.DockerImage(t, 1, 256), testenv.DockerImage(t, 1, 256)
		e.up.Push(t, "library/app:v1", a)
		e.pullTag(t, "library/app:v1", manifestDigest(t, a))
		e.up.Close()
		writeTag(t, e, b, manifestDigest(t, b))
		e.clock.Advance(6 * time.Second)
		e.pullTag(t, "library/app:v1", manifestDigest(t, b))
	})
	t.Run("while serving stale", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, envOptions{})
		a, b := testenv.DockerImage(t, 1, 256), testenv.DockerImage(t, 1, 256)
		e.up.Push(t, "library/app:v1", a)
		e.pullTag(t, "library/app:v1", manifestDigest(t, a))
		e.up.Close()
		e.clock.Advance(time.Hour)
		e.pullTag(t, "library/app:v1", manifestDigest(t, a)) // stale; memory holds it
		writeTag(t, e, b, manifestDigest(t, b))
		e.pullTag(t, "library/app:v1", manifestDigest(t, b)) // no clock step: read before serving stale
	})
}

// TestTagUnreadableTimeIsRevalidated: a tag whose Stowage time record is
// corrupt is stale (revalidated), while a tag without any record (written
// by a stock registry) stays local content.
func TestTagUnreadableTimeIsRevalidated(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	a, b := testenv.DockerImage(t, 1, 256), testenv.DockerImage(t, 1, 256)
	e.up.Push(t, "library/app:v1", a)
	e.up.Push(t, "library/app:v2", a)
	e.pullTag(t, "library/app:v1", manifestDigest(t, a))
	e.pullTag(t, "library/app:v2", manifestDigest(t, a))
	e.up.Push(t, "library/app:v1", b)
	e.up.Push(t, "library/app:v2", b)
	timeFile := func(tag string) string {
		return filepath.Join(e.root, filepath.FromSlash(storage.TagFetchedPath("docker.io/library/app", tag)))
	}
	if err := os.WriteFile(timeFile("v1"), []byte("garbage"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(timeFile("v2")); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(6 * time.Second) // past the memory lifetime, within the TTL
	e.up.ResetCounts()
	e.pullTag(t, "library/app:v1", manifestDigest(t, b))
	e.pullTag(t, "library/app:v2", manifestDigest(t, a))
	if n := e.up.Count(testenv.ManifestHead); n != 1 {
		t.Fatalf("upstream HEADs = %d, want 1 (v1 only)", n)
	}
}

// TestProxyAuth407ServesStale: a forward proxy's 407 is not the registry's
// refusal: a cached tag past its TTL is served stale.
func TestProxyAuth407ServesStale(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	img := testenv.DockerImage(t, 1, 256)
	e.up.Push(t, "library/pa:v1", img)
	e.pullTag(t, "library/pa:v1", manifestDigest(t, img))
	e.up.SetFault(testenv.ManifestProxyAuthRequired())
	e.clock.Advance(time.Hour)
	e.pullTag(t, "library/pa:v1", manifestDigest(t, img))
}

// TestDownWindowGrows: while the upstream keeps failing, the window in
// which stale tags are served without asking it doubles (10 s, 20 s, 40 s,
// ...); a success resets it.
func TestDownWindowGrows(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	img := testenv.DockerImage(t, 1, 256)
	want := manifestDigest(t, img)
	e.up.Push(t, "library/flaky:v1", img)
	e.pullTag(t, "library/flaky:v1", want)
	down := func(w http.ResponseWriter, r *http.Request, next http.Handler) {
		http.Error(w, "down", http.StatusServiceUnavailable)
	}
	e.up.SetFault(down)
	e.clock.Advance(time.Hour)
	asked := func(step time.Duration) bool {
		t.Helper()
		e.clock.Advance(step)
		before := e.up.Count(testenv.ManifestHead)
		e.pullTag(t, "library/flaky:v1", want)
		return e.up.Count(testenv.ManifestHead) > before
	}
	steps := []struct {
		advance time.Duration
		asked   bool
	}{
		{0, true},                 // failure 1: down for 10 s
		{9 * time.Second, false},  // t=9
		{2 * time.Second, true},   // t=11: failure 2, down for 20 s
		{11 * time.Second, false}, // +11
		{10 * time.Second, true},  // +21: failure 3, down for 40 s
		{39 * time.Second, false}, // +39
		{2 * time.Second, true},   // +41: failure 4, down for 80 s
	}
	for i, s := range steps {
		if got := asked(s.advance); got != s.asked {
			t.Fatalf("step %d (+%s): upstream asked = %v, want %v", i, s.advance, got, s.asked)
		}
	}
	e.up.SetFault(nil)
	if !asked(81 * time.Second) { // success: the window resets
		t.Fatal("not asked after the window")
	}
	e.up.SetFault(down)
	e.clock.Advance(time.Hour)
	for i, s := range steps[:3] {
		if got := asked(s.advance); got != s.asked {
			t.Fatalf("after reset, step %d: upstream asked = %v, want %v", i, got, s.asked)
		}
	}
}

// TestInvalidAnswerMarksDown: an unusable upstream answer (a policy page)
// on revalidation opens the down window like a 503 does.
func TestInvalidAnswerMarksDown(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	img := testenv.DockerImage(t, 1, 256)
	e.up.Push(t, "library/inv:v1", img)
	e.pullTag(t, "library/inv:v1", manifestDigest(t, img))
	e.up.SetFault(testenv.ManifestInterstitial())
	e.clock.Advance(time.Hour)
	e.up.ResetCounts()
	e.pullTag(t, "library/inv:v1", manifestDigest(t, img))
	first := e.up.Count(testenv.ManifestHead) + e.up.Count(testenv.ManifestGet)
	if first == 0 {
		t.Fatal("the first stale request did not ask the upstream")
	}
	for range 3 {
		e.pullTag(t, "library/inv:v1", manifestDigest(t, img))
	}
	if n := e.up.Count(testenv.ManifestHead) + e.up.Count(testenv.ManifestGet); n != first {
		t.Fatalf("upstream manifest requests grew from %d to %d within the down window", first, n)
	}
}

// TestDefaultMaxStale: by default a tag is served stale for 7 days past its
// TTL, then refused; each stale serve's age is exported.
func TestDefaultMaxStale(t *testing.T) {
	t.Parallel()
	if got := config.Default().Cache.MaxStale; got != 7*24*time.Hour {
		t.Fatalf("default max_stale %s, want 168h", got)
	}
	e := newEnv(t, envOptions{})
	img := testenv.DockerImage(t, 1, 256)
	e.up.Push(t, "library/old:v1", img)
	e.pullTag(t, "library/old:v1", manifestDigest(t, img))
	e.up.Close()
	e.clock.Advance(7*24*time.Hour + e.cfg.Cache.TagTTL - time.Minute)
	e.pullTag(t, "library/old:v1", manifestDigest(t, img))
	if n := e.metricValue(t, `stowage_stale_serve_age_seconds_count{upstream="docker.io"}`); n != 1 {
		t.Fatalf("stale age observations = %v, want 1", n)
	}
	if n := e.metricValue(t, `stowage_stale_serve_age_seconds_bucket{upstream="docker.io",le="604800"}`); n != 0 {
		t.Fatalf("a serve 7 days old counted at or under 7 days (%v)", n)
	}
	e.clock.Advance(2 * time.Minute)
	if r := e.manifest(t, http.MethodGet, "library/old:v1"); r.status < 500 {
		t.Fatalf("beyond the default max_stale: status %d", r.status)
	}
}

// TestCorruptManifestRefetched: a stored manifest whose bytes no longer
// match their digest is fetched again, by digest and by tag.
func TestCorruptManifestRefetched(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	img := testenv.DockerImage(t, 1, 256)
	e.up.Push(t, "library/rot:v1", img)
	d := manifestDigest(t, img)
	raw, err := img.RawManifest()
	if err != nil {
		t.Fatal(err)
	}
	e.pullTag(t, "library/rot:v1", d)
	corrupt := func() {
		t.Helper()
		p := filepath.Join(e.root, filepath.FromSlash(storage.BlobDataPath(d)))
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		b[len(b)/2] ^= 0x20
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, ref := range []string{"library/rot@" + d.String(), "library/rot:v1"} {
		corrupt()
		store, err := storage.NewFilesystem(e.root)
		if err != nil {
			t.Fatal(err)
		}
		fresh := e.reopen(t, store, nil) // nothing in memory
		r := fresh.manifest(t, http.MethodGet, ref)
		if r.status != http.StatusOK || string(r.body) != string(raw) {
			t.Fatalf("%s after corruption: status %d code %q", ref, r.status, r.code)
		}
		if got, err := store.GetManifest(t.Context(), "docker.io/library/rot", d); err != nil || string(got) != string(raw) {
			t.Fatalf("%s: stored copy not repaired: %v", ref, err)
		}
	}
}

// TestManifestServedWhenStoreFails: a manifest fetched fine is served even
// when the disk is full; the failure is logged and counted as the store's.
func TestManifestServedWhenStoreFails(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	f, fd := e.reopenFaulty(t)
	fd.setFailPut(func(path string) error { return fmt.Errorf("write %s: %w", path, syscall.ENOSPC) })
	img := testenv.DockerImage(t, 1, 256)
	e.up.Push(t, "library/full:v1", img)
	d := manifestDigest(t, img)
	for range 2 {
		f.pullTag(t, "library/full:v1", d)
		if r := f.manifest(t, http.MethodGet, "library/full@"+d.String()); r.status != http.StatusOK {
			t.Fatalf("by digest with a full disk: status %d code %q", r.status, r.code)
		}
	}
	if n := f.metricValue(t, `stowage_manifest_store_failures_total{kind="manifest"}`); n < 1 {
		t.Fatalf("store failures counted: %v", n)
	}
}

// TestTagTimeInTheFutureIsRevalidated: a time record far ahead of this
// replica's clock (written by a replica whose clock ran a year fast, or
// before a clock was set back) does not keep the tag fresh: the tag is
// revalidated and follows the upstream. Before, the negative age counted
// as fresh until the future time plus the TTL, so the tag kept serving its
// old digest without ever asking the upstream.
func TestTagTimeInTheFutureIsRevalidated(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	a, b := testenv.DockerImage(t, 1, 256), testenv.DockerImage(t, 1, 256)
	e.up.Push(t, "library/app:v1", a)
	e.up.Push(t, "library/app:v2", a)
	e.pullTag(t, "library/app:v1", manifestDigest(t, a))
	e.pullTag(t, "library/app:v2", manifestDigest(t, a))
	e.up.Push(t, "library/app:v1", b)
	e.up.Push(t, "library/app:v2", b)
	ctx := t.Context()
	// v1: a year ahead; v2: a few seconds ahead (clocks a little apart),
	// still fresh.
	for tag, ahead := range map[string]time.Duration{"v1": 365 * 24 * time.Hour, "v2": 5 * time.Second} {
		if err := e.store.TouchTag(ctx, "docker.io/library/app", tag, manifestDigest(t, a), e.clock.Now().Add(ahead)); err != nil {
			t.Fatal(err)
		}
	}
	e.clock.Advance(6 * time.Second) // past the memory lifetime, within the TTL
	e.up.ResetCounts()
	e.pullTag(t, "library/app:v1", manifestDigest(t, b))
	e.pullTag(t, "library/app:v2", manifestDigest(t, a))
	if n := e.up.Count(testenv.ManifestHead); n != 1 {
		t.Fatalf("upstream HEADs = %d, want 1 (v1 only)", n)
	}
}
