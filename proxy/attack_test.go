package proxy_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/stowage/stowage/config"
	"github.com/stowage/stowage/proxy/internal/testenv"
	"github.com/stowage/stowage/storage"
)

// Adversarial tests of the "never wrong" invariant: no client may receive a
// complete response (every promised byte, 200 or 206) with bytes that were
// not verified. The upstream is a real registry behind hostile faults.

// answer is one client's view of a response.
type answer struct {
	status int
	hdr    http.Header
	body   []byte
	err    error // the body read error: a cut-short response
}

// complete reports a response that delivered every byte it promised.
func (a answer) complete() bool {
	return (a.status == http.StatusOK || a.status == http.StatusPartialContent) && a.err == nil
}

func (a answer) String() string {
	return strconv.Itoa(a.status) + " with " + strconv.Itoa(len(a.body)) + " bytes (read error: " + errString(a.err) + ")"
}

func errString(err error) string {
	if err == nil {
		return "none"
	}
	return err.Error()
}

// fetch performs a request and reads the whole body.
func (e *env) fetch(ctx context.Context, method, path string, hdr http.Header) answer {
	e.t.Helper()
	req, err := http.NewRequestWithContext(ctx, method, e.srv.URL+path, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return answer{err: err}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return answer{status: resp.StatusCode, hdr: resp.Header, body: body, err: err}
}

// rangeOf returns the bytes a single "bytes=a-b", "a-" or "-n" range
// selects from blob.
func rangeOf(t *testing.T, blob []byte, spec string) []byte {
	t.Helper()
	s, e, _ := strings.Cut(strings.TrimPrefix(spec, "bytes="), "-")
	size := int64(len(blob))
	switch {
	case s == "":
		n, _ := strconv.ParseInt(e, 10, 64)
		return blob[size-min(n, size):]
	case e == "":
		a, _ := strconv.ParseInt(s, 10, 64)
		return blob[a:]
	}
	a, _ := strconv.ParseInt(s, 10, 64)
	b, _ := strconv.ParseInt(e, 10, 64)
	return blob[a : min(b, size-1)+1]
}

// neverWrong fails the test when a is complete but its body is not the
// blob's bytes for the request's range (want: the full blob).
func neverWrong(t *testing.T, who string, a answer, blob []byte, rng string) {
	t.Helper()
	if !a.complete() {
		return
	}
	want := blob
	if rng != "" && a.status == http.StatusPartialContent {
		want = rangeOf(t, blob, rng)
	}
	if !bytes.Equal(a.body, want) {
		t.Errorf("%s: complete %s with wrong bytes (want %d bytes)", who, a, len(want))
	}
}

// seedRead seeds a blob like seedBlob and returns its bytes too, read
// from the upstream before the counters are reset.
func (e *env) seedRead(repoTag string, size int64, seed uint64) (digest.Digest, []byte) {
	e.t.Helper()
	d := e.seedBlob(repoTag, size, seed)
	t, ok := e.t.(*testing.T)
	if !ok {
		e.t.Fatal("seedRead needs a *testing.T")
	}
	blob := e.blobBytes(t, strings.Split(repoTag, ":")[0], d)
	e.up.ResetCounts()
	return d, blob
}

// notCommitted fails when d is in the store.
func notCommitted(t *testing.T, e *env, d digest.Digest) {
	t.Helper()
	if _, err := e.store.StatBlob(context.Background(), d); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("blob committed after a hostile upstream (StatBlob: %v)", err)
	}
}

// TestAttackEmptyBodyLie: the upstream answers every blob GET with 200,
// Content-Length: 0 and no body. No client may get a complete 200 or 206
// (with no bytes, for a non-empty digest), no link may be written, nothing
// committed. A client that saw the size 0 before the fill failed on the
// digest used to get a complete empty 200: there is no last byte to hold
// back, so nothing stopped the response. The window is a race; rounds of
// concurrent clients hit it reliably on the unfixed code.
func TestAttackEmptyBodyLie(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	d := e.seedBlob("library/empty:v1", 64<<10, 101)
	e.up.SetFault(testenv.EmptyBlobs())
	ranges := []string{"", "bytes=0-", "bytes=-100", ""}
	for round := range 50 {
		answers := make([]answer, len(ranges))
		var wg sync.WaitGroup
		for i, rng := range ranges {
			wg.Go(func() {
				var hdr http.Header
				if rng != "" {
					hdr = http.Header{"Range": {rng}}
				}
				answers[i] = e.fetch(t.Context(), http.MethodGet, "/v2/library/empty/blobs/"+d.String(), hdr)
			})
		}
		wg.Wait()
		for i, a := range answers {
			if a.complete() {
				t.Fatalf("round %d, Range %q: complete %s for a %d-byte blob the upstream sent as empty", round, ranges[i], a, 64<<10)
			}
		}
		waitNoFills(t, e)
	}
	notCommitted(t, e, d)
	if linked, err := e.store.BlobLinked(context.Background(), "docker.io/library/empty", d); err != nil || linked {
		t.Errorf("repository linked to a blob that was never verified (linked %v, %v)", linked, err)
	}
}

// TestAttackZeroLengthSuffixDuringFill: "Range: bytes=-0" selects no byte,
// so net/http answers a 206 without reading a byte (its Content-Range
// names the upstream's unverified size). During a fill whose bytes turn
// out wrong, that answer must not complete: it waits for the verification
// like every other response.
func TestAttackZeroLengthSuffixDuringFill(t *testing.T) {
	t.Parallel()
	const size = 256 << 10
	e := newEnv(t, envOptions{configure: func(c *config.Config) { c.Cache.Fill.MinRate = 0 }})
	d := e.seedBlob("library/zerosuffix:v1", size, 110)
	release := make(chan struct{})
	e.up.SetFault(testenv.Chain(testenv.CorruptBlobs(size), testenv.StallBlobs(size-1000, release)))
	first := make(chan answer, 1)
	go func() { first <- e.fetch(t.Context(), http.MethodGet, "/v2/library/zerosuffix/blobs/"+d.String(), nil) }()
	waitFor(t, "the fill to stall", func() bool {
		fills := e.proxy.Fills()
		return len(fills) == 1 && fills[0].Written == size-1000
	})
	zero := make(chan answer, 1)
	go func() {
		zero <- e.fetch(t.Context(), http.MethodGet, "/v2/library/zerosuffix/blobs/"+d.String(), http.Header{"Range": {"bytes=-0"}})
	}()
	waitFor(t, "the second client to join", func() bool {
		fills := e.proxy.Fills()
		return len(fills) == 1 && fills[0].Clients == 2
	})
	close(release)
	a := <-zero
	if a.complete() {
		t.Errorf(`"bytes=-0" during a fill that failed verification: complete %s (Content-Range %q)`, a, a.hdr.Get("Content-Range"))
	}
	if a.status != http.StatusBadGateway || !bytes.Contains(a.body, []byte(`"errors"`)) ||
		a.hdr.Get("Content-Range") != "" || a.hdr.Get("Cache-Control") != "" || a.hdr.Get("Docker-Content-Digest") != "" {
		t.Errorf(`"bytes=-0": %s %q with headers %v, want a clean 502 OCI error`, a, a.body, a.hdr)
	}
	if a := <-first; a.complete() {
		t.Errorf("full GET from a corrupt upstream: complete %s", a)
	}
	waitNoFills(t, e)
	notCommitted(t, e, d)
}

// TestAttackRealEmptyBlob: a genuinely empty blob (the sha256 of no bytes)
// is served complete and committed, with one upstream GET.
func TestAttackRealEmptyBlob(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	d := e.seedBlob("library/nothing:v1", 0, 102)
	if d != digest.FromBytes(nil) {
		t.Fatalf("seeded %s, want the empty digest", d)
	}
	a := e.fetch(t.Context(), http.MethodGet, "/v2/library/nothing/blobs/"+d.String(), nil)
	if !a.complete() || a.status != http.StatusOK || len(a.body) != 0 || a.hdr.Get("Content-Length") != "0" {
		t.Fatalf("empty blob: %s", a)
	}
	waitNoFills(t, e)
	if _, err := e.store.StatBlob(context.Background(), d); err != nil {
		t.Fatalf("empty blob not committed: %v", err)
	}
	// net/http ignores ranges on an empty body: a plain 200.
	a = e.fetch(t.Context(), http.MethodGet, "/v2/library/nothing/blobs/"+d.String(), http.Header{"Range": {"bytes=0-"}})
	if a.status != http.StatusOK || len(a.body) != 0 || a.err != nil {
		t.Fatalf("range on an empty blob: %s, want an empty 200", a)
	}
	if n := e.up.Count(testenv.BlobGet); n != 1 {
		t.Fatalf("upstream blob GETs = %d, want 1", n)
	}
}

// TestAttackDifferentBytesEveryTime: the upstream ignores Range, cuts
// every body at half and flips a different byte on every GET. A full
// client, a suffix range and a range from the middle join the fill; none
// may complete, nothing is committed, and the upstream GETs stay within
// cache.fill.max_attempts.
func TestAttackDifferentBytesEveryTime(t *testing.T) {
	t.Parallel()
	const size = 2 << 20
	e := newEnv(t, envOptions{})
	d, blob := e.seedRead("library/shifty:v1", size, 103)
	// Byte 4096*k flipped on the k-th GET; the cut makes every attempt
	// restart from zero with a body that differs from the staged one.
	e.up.SetFault(testenv.IgnoreRange(testenv.Chain(testenv.MutateBlobs(4096), testenv.CutAfter(size/2+4096))))
	ranges := []string{"", "bytes=-100", "bytes=1048576-", "bytes=0-"}
	answers := make([]answer, len(ranges))
	var wg sync.WaitGroup
	for i, rng := range ranges {
		wg.Go(func() {
			var hdr http.Header
			if rng != "" {
				hdr = http.Header{"Range": {rng}}
			}
			answers[i] = e.fetch(t.Context(), http.MethodGet, "/v2/library/shifty/blobs/"+d.String(), hdr)
		})
	}
	wg.Wait()
	for i, a := range answers {
		neverWrong(t, "client "+strconv.Itoa(i)+" (Range "+ranges[i]+")", a, blob, ranges[i])
		if a.complete() {
			t.Errorf("client %d (Range %q) completed %s although the upstream never sent the blob", i, ranges[i], a)
		}
	}
	waitNoFills(t, e)
	notCommitted(t, e, d)
	if n := e.up.Count(testenv.BlobGet); n > e.cfg.Cache.Fill.MaxAttempts {
		t.Errorf("upstream blob GETs = %d, more than max_attempts %d", n, e.cfg.Cache.Fill.MaxAttempts)
	}
}

// TestAttackLyingContentLength: Content-Length larger or smaller than the
// blob. No complete response, nothing committed, few upstream GETs.
func TestAttackLyingContentLength(t *testing.T) {
	t.Parallel()
	const size = 256 << 10
	for _, delta := range []int64{+100, -100} {
		e := newEnv(t, envOptions{})
		d, blob := e.seedRead("library/liar:v1", size, 104)
		e.up.SetFault(testenv.LieLength(delta))
		for _, rng := range []string{"", "bytes=-10", "bytes=0-99"} {
			var hdr http.Header
			if rng != "" {
				hdr = http.Header{"Range": {rng}}
			}
			a := e.fetch(t.Context(), http.MethodGet, "/v2/library/liar/blobs/"+d.String(), hdr)
			neverWrong(t, "delta "+strconv.FormatInt(delta, 10)+" Range "+rng, a, blob, rng)
			if a.complete() && delta > 0 {
				t.Errorf("delta %+d Range %q: complete %s", delta, rng, a)
			}
		}
		waitNoFills(t, e)
		if delta > 0 {
			notCommitted(t, e, d)
		}
		if n := e.up.Count(testenv.BlobGet); n > 3*e.cfg.Cache.Fill.MaxAttempts {
			t.Errorf("delta %+d: upstream blob GETs = %d", delta, n)
		}
	}
}

// TestAttackChunkedWrongBytes: a body without Content-Length whose bytes
// are wrong: the client gets an error, never a complete 200.
func TestAttackChunkedWrongBytes(t *testing.T) {
	t.Parallel()
	const size = 1 << 20
	e := newEnv(t, envOptions{})
	d, blob := e.seedRead("library/chunky:v1", size, 105)
	e.up.SetFault(testenv.NoLength(testenv.CorruptBlobs(4096)))
	neverComplete(t, e, "/v2/library/chunky/blobs/"+d.String(), blob, "", "bytes=0-99", "bytes=-5")
	waitNoFills(t, e)
	notCommitted(t, e, d)
}

// TestAttackRangeStartLies: the first body is cut at half; the resume is
// answered 206 with the right Content-Range start but the bytes from zero.
// Nobody completes, nothing is committed.
func TestAttackRangeStartLies(t *testing.T) {
	t.Parallel()
	const size = 1 << 20
	e := newEnv(t, envOptions{})
	d, blob := e.seedRead("library/rangelie:v1", size, 106)
	e.up.SetFault(testenv.Chain(testenv.CutBlobs(size/2), testenv.RangeFromZero()))
	neverComplete(t, e, "/v2/library/rangelie/blobs/"+d.String(), blob, "", "bytes=-100")
	waitNoFills(t, e)
	notCommitted(t, e, d)
}

// TestAttackSizeChangeMidFill: the resume's Content-Range announces
// another total size: the fill fails with a size change, clients are cut
// short, nothing is committed.
func TestAttackSizeChangeMidFill(t *testing.T) {
	t.Parallel()
	const size = 1 << 20
	e := newEnv(t, envOptions{})
	d, blob := e.seedRead("library/resize:v1", size, 107)
	e.up.SetFault(testenv.Chain(testenv.CutBlobs(size/2), testenv.ResizeRanges(+4096)))
	a := e.fetch(t.Context(), http.MethodGet, "/v2/library/resize/blobs/"+d.String(), nil)
	neverWrong(t, "full", a, blob, "")
	if a.complete() {
		t.Errorf("complete %s after a size change", a)
	}
	waitNoFills(t, e)
	notCommitted(t, e, d)
	if n := e.up.Count(testenv.BlobGet); n != 2 {
		t.Errorf("upstream blob GETs = %d, want 2 (a size change is not retried)", n)
	}
}

// TestAttackUnusualRanges: multi-range, If-Range and a range past the end,
// during a fill from a corrupt upstream (never complete) and then from the
// committed blob (served right).
func TestAttackUnusualRanges(t *testing.T) {
	t.Parallel()
	const size = 512 << 10
	e := newEnv(t, envOptions{})
	d, blob := e.seedRead("library/ranges:v1", size, 108)
	path := "/v2/library/ranges/blobs/" + d.String()
	etag := `"` + d.String() + `"`
	cases := []http.Header{
		{"Range": {"bytes=0-10,20-30"}},
		{"Range": {"bytes=0-10,-5"}},
		{"Range": {"bytes=0-99"}, "If-Range": {etag}},
		{"Range": {"bytes=100-"}, "If-Range": {etag}},
		{"Range": {"bytes=0-99"}, "If-Range": {`"other"`}},
		{"Range": {"Bytes=0-99"}},
		{"Range": {"bytes= 0-99"}},
		{"Range": {"bytes=+0-+99"}},
	}
	e.up.SetFault(testenv.CorruptBlobs(size)) // flips byte size/2
	for _, hdr := range cases {
		a := e.fetch(t.Context(), http.MethodGet, path, hdr)
		if a.complete() {
			t.Errorf("corrupt upstream, %v: complete %s", hdr, a)
		}
		waitNoFills(t, e)
	}
	if a := e.fetch(t.Context(), http.MethodGet, path, http.Header{"Range": {"bytes=" + strconv.Itoa(size+10) + "-"}}); a.status != http.StatusRequestedRangeNotSatisfiable && a.complete() {
		t.Errorf("range past the end during a corrupt fill: %s", a)
	}
	waitNoFills(t, e)
	notCommitted(t, e, d)

	e.up.SetFault(nil)
	a := e.fetch(t.Context(), http.MethodGet, path, http.Header{"Range": {"bytes=0-10,20-30"}})
	if a.status != http.StatusPartialContent || a.err != nil {
		t.Fatalf("healthy multi-range: %s", a)
	}
	mt, params, err := mime.ParseMediaType(a.hdr.Get("Content-Type"))
	if err != nil || mt != "multipart/byteranges" {
		t.Fatalf("multi-range Content-Type %q: %v", a.hdr.Get("Content-Type"), err)
	}
	mr := multipart.NewReader(bytes.NewReader(a.body), params["boundary"])
	for _, want := range [][]byte{blob[0:11], blob[20:31]} {
		part, err := mr.NextPart()
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(part)
		if !bytes.Equal(got, want) {
			t.Fatalf("multi-range part %q: %d bytes, not the blob's", part.Header.Get("Content-Range"), len(got))
		}
	}
	waitNoFills(t, e)
	for _, rng := range []string{"bytes=-100", "bytes=0-99", "bytes=100-199"} {
		a := e.fetch(t.Context(), http.MethodGet, path, http.Header{"Range": {rng}})
		if a.status != http.StatusPartialContent || !bytes.Equal(a.body, rangeOf(t, blob, rng)) {
			t.Fatalf("cached, Range %s: %s", rng, a)
		}
	}
	if a := e.fetch(t.Context(), http.MethodGet, path, http.Header{"Range": {"bytes=" + strconv.Itoa(size) + "-"}}); a.status != http.StatusRequestedRangeNotSatisfiable {
		t.Fatalf("range past the end: %s, want 416", a)
	}
}

// TestAttackCancelWhileReading: an operator cancels a slow fill through
// DELETE /api/v1/fills/{digest} while a full client, a suffix range and a
// closed range wait on it: each is cut short (or answered an error),
// nothing is committed, the fill counts as cancelled.
func TestAttackCancelWhileReading(t *testing.T) {
	t.Parallel()
	const size = 1 << 20
	e := newEnv(t, envOptions{configure: func(c *config.Config) { c.Cache.Fill.MinRate = 0 }})
	d, blob := e.seedRead("library/cancelme:v1", size, 109)
	release := make(chan struct{})
	defer close(release)
	e.up.SetFault(testenv.StallBlobs(size/2, release))
	ranges := []string{"", "bytes=-100", "bytes=0-99"}
	answers := make([]answer, len(ranges))
	var wg sync.WaitGroup
	for i, rng := range ranges {
		wg.Go(func() {
			var hdr http.Header
			if rng != "" {
				hdr = http.Header{"Range": {rng}}
			}
			answers[i] = e.fetch(t.Context(), http.MethodGet, "/v2/library/cancelme/blobs/"+d.String(), hdr)
		})
	}
	waitFor(t, "three clients on the stalled fill", func() bool {
		fills := e.proxy.Fills()
		return len(fills) == 1 && fills[0].Clients == 3 && fills[0].Written == size/2
	})
	admin := httptest.NewServer(e.proxy.FillsHandler())
	defer admin.Close()
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodDelete, admin.URL+"/api/v1/fills/"+d.String(), nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("DELETE: %d", resp.StatusCode)
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("clients still waiting 20s after the cancel")
	}
	for i, a := range answers {
		neverWrong(t, "client "+ranges[i], a, blob, ranges[i])
		if a.complete() {
			t.Errorf("client %q completed %s after the cancel", ranges[i], a)
		}
	}
	waitNoFills(t, e)
	notCommitted(t, e, d)
	if !strings.Contains(e.metrics(t), `stowage_fills_total{outcome="cancelled"} 1`) {
		t.Error("fill not counted as cancelled")
	}
	if n := e.up.Count(testenv.BlobGet); n != 1 {
		t.Errorf("upstream blob GETs = %d, want 1 (a cancelled fill does not retry)", n)
	}
}

// TestAttackEndlessChunkedBody: the upstream answers the blob GET without
// Content-Length and never stops sending. The fill must stop at a small
// multiple of the blob's size (the upstream's HEAD knows it), not write
// until cache.fill.max_duration; no client completes, nothing is
// committed.
func TestAttackEndlessChunkedBody(t *testing.T) {
	t.Parallel()
	const size = 64 << 10
	e := newEnv(t, envOptions{})
	d := e.seedBlob("library/endless:v1", size, 111)
	e.up.SetFault(testenv.EndlessBlobs(256 << 20))
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	a := e.fetch(ctx, http.MethodGet, "/v2/library/endless/blobs/"+d.String(), nil)
	if a.complete() && a.status == http.StatusOK {
		t.Errorf("complete %s from an endless body", a)
	}
	waitNoFills(t, e)
	notCommitted(t, e, d)
	// The bound: max_download_factor x size + 1 MiB, plus what sat in
	// socket buffers when the fill stopped reading.
	if sent := e.up.BlobBytes(); sent > 16<<20 {
		t.Errorf("the upstream sent %d MiB for a %d KiB blob before the fill stopped", sent>>20, size>>10)
	}
	if g, h := e.up.Count(testenv.BlobGet), e.up.Count(testenv.BlobHead); g != 1 || h != 1 {
		t.Errorf("upstream blob GETs %d, HEADs %d; want 1 and 1 (a body longer than the blob is not retried)", g, h)
	}
}

// TestAttackRestartWithJoinersAtOffsets: the first attempt sends a wrong
// byte at 1 MiB and breaks at 1.5 MiB; the second ignores Range and sends
// the right blob from zero. A full client (which may have had the wrong
// byte), a suffix range, a closed range and an open range from the middle
// follow the fill: nobody completes with a wrong byte, the ranges that
// never saw the first attempt's bytes complete right, and the blob is
// committed after two GETs.
func TestAttackRestartWithJoinersAtOffsets(t *testing.T) {
	t.Parallel()
	const size = 2 << 20
	e := newEnv(t, envOptions{})
	d, blob := e.seedRead("library/offsets:v1", size, 112)
	e.up.SetFault(testenv.IgnoreRange(testenv.FirstBlobGet(testenv.CorruptThenCut(1<<20, 3<<19), testenv.SlowBlobs(256<<10, 5*time.Millisecond))))
	ranges := []string{"", "bytes=-100", "bytes=0-99", "bytes=1900000-"}
	answers := make([]answer, len(ranges))
	var wg sync.WaitGroup
	for i, rng := range ranges {
		wg.Go(func() {
			var hdr http.Header
			if rng != "" {
				hdr = http.Header{"Range": {rng}}
			}
			answers[i] = e.fetch(t.Context(), http.MethodGet, "/v2/library/offsets/blobs/"+d.String(), hdr)
		})
	}
	wg.Wait()
	for i, a := range answers {
		neverWrong(t, "client "+ranges[i], a, blob, ranges[i])
		if i > 0 && !a.complete() {
			t.Errorf("client %q never had a byte of the first attempt, yet got %s", ranges[i], a)
		}
	}
	waitNoFills(t, e)
	if _, err := e.store.StatBlob(context.Background(), d); err != nil {
		t.Fatalf("not committed: %v", err)
	}
	if n := e.up.Count(testenv.BlobGet); n != 2 {
		t.Errorf("upstream blob GETs = %d, want 2", n)
	}
}

// neverComplete GETs path once per range ("" for none) from an upstream
// that cannot give the right bytes: no answer may be wrong (neverWrong),
// and none may complete.
func neverComplete(t *testing.T, e *env, path string, blob []byte, ranges ...string) {
	t.Helper()
	for _, rng := range ranges {
		var hdr http.Header
		if rng != "" {
			hdr = http.Header{"Range": {rng}}
		}
		a := e.fetch(t.Context(), http.MethodGet, path, hdr)
		neverWrong(t, "Range "+rng, a, blob, rng)
		if a.complete() {
			t.Errorf("Range %q: complete %s from an upstream that cannot give the right bytes", rng, a)
		}
	}
}
