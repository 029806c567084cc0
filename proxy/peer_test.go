package proxy_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/stowage/stowage/config"
	"github.com/stowage/stowage/proxy"
	"github.com/stowage/stowage/proxy/cluster"
	"github.com/stowage/stowage/proxy/internal/testenv"
	"github.com/stowage/stowage/storage"
	"github.com/stowage/stowage/upstream"
)

const peerSecret = "peer-test-secret-0123456789"

// replica is one Stowage instance of a peer-streaming cluster: its client
// API and, on another listener, its internal endpoint.
type replica struct {
	*env
	internal *httptest.Server
	leases   *cluster.RedisLeases
}

// newReplicas starts n replicas on one cache root in front of one upstream,
// coordinated through the real Redis (127.0.0.1:6379) under a fresh prefix,
// each advertising its internal endpoint in its leases.
func newReplicas(t *testing.T, n int) []*replica {
	t.Helper()
	return newReplicasWith(t, n, replicaOptions{})
}

// replicaOptions adjust newReplicasWith.
type replicaOptions struct {
	stall time.Duration // PeerConfig.Stall
	// wrapInternal wraps replica i's internal endpoint (fault injection).
	wrapInternal func(i int, h http.Handler) http.Handler
	// storeOpts, if set, gives replica i's Store options (fault injection).
	storeOpts func(i int) []storage.Option
	// wrapCoord, if set, wraps replica i's Redis leases (fault injection);
	// the result should keep LeaseOwner (embed the leases).
	wrapCoord func(i int, l *cluster.RedisLeases) proxy.Coordinator
}

func newReplicasWith(t *testing.T, n int, o replicaOptions) []*replica {
	t.Helper()
	c, prefix := testenv.Redis(t)
	up := testenv.Start(t, testenv.Options{})
	root := t.TempDir()
	out := make([]*replica, n)
	for i := range out {
		leases, err := cluster.NewRedisLeases(c, prefix, 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		internal := httptest.NewUnstartedServer(nil)
		if err := leases.Advertise("http://" + internal.Listener.Addr().String()); err != nil {
			t.Fatal(err)
		}
		var opts []storage.Option
		if o.storeOpts != nil {
			opts = o.storeOpts(i)
		}
		var coord proxy.Coordinator = leases
		if o.wrapCoord != nil {
			coord = o.wrapCoord(i, leases)
		}
		e := newPeerEnv(t, up, root, coord, o.stall, opts...)
		internal.Config.Handler = e.proxy.PeerHandler()
		if o.wrapInternal != nil {
			internal.Config.Handler = o.wrapInternal(i, internal.Config.Handler)
		}
		internal.Start()
		t.Cleanup(internal.Close)
		out[i] = &replica{env: e, internal: internal, leases: leases}
	}
	return out
}

// newPeerEnv is newEnv with peer streaming on.
func newPeerEnv(t *testing.T, up *testenv.Registry, root string, coord proxy.Coordinator, stall time.Duration, opts ...storage.Option) *env {
	t.Helper()
	e := &env{t: t, up: up, upstream: up.URL, root: root, clock: &fakeClock{now: time.Now()}}
	cfg := config.Default()
	cfg.Listen = "127.0.0.1:0"
	cfg.Storage.Root = root
	fast := config.Upstream{
		Endpoints: []string{up.URL},
		Timeouts:  config.Timeouts{Dial: time.Second, TLSHandshake: time.Second, ResponseHeader: 2 * time.Second, Stall: 10 * time.Second},
		Retry:     config.Retry{Attempts: 3, InitialBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond},
		Internal:  true,
	}
	cfg.Upstreams = map[string]config.Upstream{"docker.io": fast}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	e.cfg = cfg
	store, err := storage.NewFilesystem(root, opts...)
	if err != nil {
		t.Fatal(err)
	}
	e.store = store
	factory := func(host string, u config.Upstream) (upstream.Registry, error) { return upstream.New(host, u) }
	p, err := proxy.New(cfg, store, factory, proxy.WithCoordinator(coord),
		proxy.WithPeers(proxy.PeerConfig{Secret: []byte(peerSecret), Stall: stall}))
	if err != nil {
		t.Fatal(err)
	}
	e.proxy = p
	e.srv = httptest.NewServer(p)
	e.host = strings.TrimPrefix(e.srv.URL, "http://")
	t.Cleanup(func() {
		e.srv.Close()
		_ = p.Close()
		_ = store.Close()
	})
	return e
}

// pull is one client's blob GET, read in two steps.
type pull struct {
	resp  *http.Response
	first time.Time // headers
}

func startPull(t *testing.T, e *env, d digest.Digest) *pull {
	t.Helper()
	pl, err := tryPull(t, e, d)
	if err != nil {
		t.Fatal(err)
	}
	return pl
}

// tryPull starts a blob GET, bounded: a client that gets no headers fails
// the test instead of hanging it. Safe in any goroutine.
func tryPull(t *testing.T, e *env, d digest.Digest) (*pull, error) {
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	t.Cleanup(cancel)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, e.srv.URL+"/v2/library/peer/blobs/"+d.String(), nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return nil, errors.New("GET blob: " + resp.Status)
	}
	return &pull{resp: resp, first: time.Now()}, nil
}

// readN reads n bytes within a bound, failing the test otherwise.
func (pl *pull) readN(t *testing.T, n int) {
	t.Helper()
	if err := pl.tryReadN(n); err != nil {
		t.Fatal(err)
	}
}

// tryReadN reads n bytes within 20s. Safe in any goroutine.
func (pl *pull) tryReadN(n int) error {
	done := make(chan error, 1)
	go func() {
		_, err := io.ReadFull(pl.resp.Body, make([]byte, n))
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("reading the first %d bytes: %w", n, err)
		}
		return nil
	case <-time.After(20 * time.Second):
		return fmt.Errorf("no %d bytes within 20s", n)
	}
}

// rest reads the remaining body and returns the digest of the whole
// (prefix is how many bytes readN took) or the read error.
func (pl *pull) rest(prefix int64, want int64) (int64, error) {
	defer pl.resp.Body.Close()
	n, err := io.Copy(io.Discard, pl.resp.Body)
	if err == nil && prefix+n != want {
		err = errors.New("short body")
	}
	return prefix + n, err
}

// blobStream reads a whole blob response from the start, returning its
// digest and length.
func fullPull(t *testing.T, e *env, d digest.Digest) (digest.Digest, int64, error) {
	t.Helper()
	resp := e.get(t.Context(), http.MethodGet, "/v2/library/peer/blobs/"+d.String(), nil)
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", 0, errors.New(resp.Status)
	}
	return readAllHash(resp.Body)
}

// heldOwner seeds a blob of size bytes on r's upstream, holds the upstream
// after its first MiB, and starts a client of r (which so owns the fill)
// that has read 256 KiB. release lets the upstream go on (once; the test's
// cleanup calls it too).
func heldOwner(t *testing.T, r *replica, size int64, seed uint64) (d digest.Digest, owner *pull, release func()) {
	t.Helper()
	d = r.seedBlob("library/peer:v1", size, seed)
	held := make(chan struct{})
	var once sync.Once
	release = func() { once.Do(func() { close(held) }) }
	t.Cleanup(release)
	r.up.SetFault(testenv.StallBlobs(1<<20, held))
	r.up.ResetCounts()
	owner = startPull(t, r.env, d)
	owner.readN(t, 256<<10)
	return d, owner, release
}

// TestPeerStreamWhileOwnerDownloads: a client of a replica that does not own
// the fill gets headers and bytes while the owner is still downloading (the
// upstream is held after 1 MiB), and the whole verified blob in the end;
// the upstream sees one GET.
func TestPeerStreamWhileOwnerDownloads(t *testing.T) {
	t.Parallel()
	rs := newReplicas(t, 3)
	a, b, c := rs[0], rs[1], rs[2]
	const size = 4 << 20
	d := a.seedBlob("library/peer:v1", size, 31)
	release := make(chan struct{})
	a.up.SetFault(testenv.StallBlobs(1<<20, release))
	a.up.ResetCounts()

	start := time.Now()
	owner := startPull(t, a.env, d)
	owner.readN(t, 512<<10)
	waiterB := startPull(t, b.env, d)
	waiterC := startPull(t, c.env, d)
	if cl := waiterB.resp.Header.Get("Content-Length"); cl != "4194304" {
		t.Fatalf("waiter Content-Length %q", cl)
	}
	waiterB.readN(t, 512<<10)
	waiterC.readN(t, 512<<10)
	// A range that reaches the end is served from the stream too.
	rctx, rcancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer rcancel()
	ranged := &pull{resp: c.get(rctx, http.MethodGet, "/v2/library/peer/blobs/"+d.String(), http.Header{"Range": {"bytes=1000-"}})}
	if ranged.resp.StatusCode != http.StatusPartialContent {
		t.Fatalf("range on the waiter: %s", ranged.resp.Status)
	}
	ranged.readN(t, 4096)
	t.Logf("headers: owner's client after %s, waiters' after %s and %s (upstream still held)",
		owner.first.Sub(start), waiterB.first.Sub(start), waiterC.first.Sub(start))
	// The upstream is still held: every client got bytes before the
	// owner's download could finish.
	close(release)
	var wg sync.WaitGroup
	for _, pl := range []*pull{owner, waiterB, waiterC} {
		wg.Go(func() {
			if n, err := pl.rest(512<<10, size); err != nil {
				t.Errorf("client: %d bytes: %v", n, err)
			}
		})
	}
	wg.Go(func() {
		if n, err := ranged.rest(4096, size-1000); err != nil {
			t.Errorf("ranged client: %d bytes: %v", n, err)
		}
	})
	wg.Wait()
	if n := a.up.Count(testenv.BlobGet); n != 1 {
		t.Fatalf("upstream blob GETs = %d, want 1", n)
	}
	for _, r := range rs {
		got, n, err := fullPull(t, r.env, d)
		if err != nil || got != d || n != size {
			t.Fatalf("after the fill: %s %d %v", got, n, err)
		}
	}
}

// TestPeerStreamCorruptUpstream: the owner's upstream sends a wrong byte:
// the clients of both replicas are cut short and nothing is committed.
func TestPeerStreamCorruptUpstream(t *testing.T) {
	t.Parallel()
	rs := newReplicas(t, 2)
	a, b := rs[0], rs[1]
	const size = 4 << 20
	d := a.seedBlob("library/peer:v1", size, 32)
	release := make(chan struct{})
	a.up.SetFault(testenv.Chain(testenv.CorruptBlobs(size), testenv.StallBlobs(1<<20, release)))
	a.up.ResetCounts()

	owner := startPull(t, a.env, d)
	owner.readN(t, 256<<10)
	waiter := startPull(t, b.env, d)
	waiter.readN(t, 256<<10)
	close(release)
	for i, pl := range []*pull{owner, waiter} {
		if n, err := pl.rest(256<<10, size); err == nil {
			t.Fatalf("client %d: complete response (%d bytes) from a corrupt upstream", i, n)
		}
	}
	if _, err := a.store.StatBlob(t.Context(), d); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("blob committed after a corrupt download: %v", err)
	}
	if n := a.up.Count(testenv.BlobGet); n != 1 {
		t.Fatalf("upstream blob GETs = %d, want 1 (the waiter takes the owner's verdict)", n)
	}
}

// TestPeerStreamOwnerDies: the owner shuts down mid-fill; the replica that
// streamed from it takes the lease over, resumes from what it holds and
// its client gets the whole verified blob.
func TestPeerStreamOwnerDies(t *testing.T) {
	t.Parallel()
	rs := newReplicas(t, 2)
	a, b := rs[0], rs[1]
	const size = 4 << 20
	d := a.seedBlob("library/peer:v1", size, 33)
	release := make(chan struct{})
	a.up.SetFault(testenv.StallBlobs(1<<20, release))
	a.up.ResetCounts()

	owner := startPull(t, a.env, d)
	owner.readN(t, 256<<10)
	waiter := startPull(t, b.env, d)
	waiter.readN(t, 512<<10)
	_ = a.proxy.Close() // the owner dies: its fill is cancelled, its lease released
	if _, err := owner.rest(256<<10, size); err == nil {
		t.Fatal("the dead owner's client got a complete response")
	}
	close(release)
	n, err := waiter.rest(512<<10, size)
	if err != nil {
		t.Fatalf("waiter after the owner died: %d bytes: %v", n, err)
	}
	got, _, err := fullPull(t, b.env, d)
	if err != nil || got != d {
		t.Fatalf("committed blob: %s %v", got, err)
	}
	if n := a.up.Count(testenv.BlobGet); n != 2 {
		t.Fatalf("upstream blob GETs = %d, want 2 (the owner's, the resumed one)", n)
	}
	// B counts one takeover that kept what it had streamed (and what the
	// owner's handed-over staging held beyond, if anything) and downloaded
	// the rest.
	m := scrape(t, b.env)
	streamed := m[`stowage_fill_inherited_bytes_total{source="streamed"}`]
	adopted := m[`stowage_fill_inherited_bytes_total{source="adopted"}`]
	downloaded := m[`stowage_fill_takeover_downloaded_bytes_total`]
	t.Logf("B's takeover: streamed %.0f, adopted %.0f, downloaded %.0f", streamed, adopted, downloaded)
	if takeovers := m[`stowage_fill_takeovers_total{source="streamed"}`] + m[`stowage_fill_takeovers_total{source="adopted"}`]; takeovers != 1 ||
		m[`stowage_fill_takeovers_total{source="none"}`] != 0 {
		t.Errorf("B's takeovers: %v streamed or adopted, %v from zero; want 1 and 0", takeovers, m[`stowage_fill_takeovers_total{source="none"}`])
	}
	if streamed < 512<<10 || int64(streamed+adopted+downloaded) != size {
		t.Errorf("B's takeover bytes: streamed %.0f (want at least what its client had), adopted %.0f, downloaded %.0f; want %d together",
			streamed, adopted, downloaded, size)
	}
}

// TestPeerEndpointAuth: the internal endpoint streams a running fill only
// with the cluster secret; without it, 401 and no byte.
func TestPeerEndpointAuth(t *testing.T) {
	t.Parallel()
	rs := newReplicas(t, 1)
	a := rs[0]
	d, owner, _ := heldOwner(t, a, 2<<20, 34)
	defer owner.resp.Body.Close()

	for _, tc := range []struct {
		name, auth string
		want       int
	}{
		{"no secret", "", http.StatusUnauthorized},
		{"wrong secret", "Bearer wrong-secret-0123456789", http.StatusUnauthorized},
		{"basic", "Basic " + peerSecret, http.StatusUnauthorized},
		{"right secret", "Bearer " + peerSecret, http.StatusOK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, a.internal.URL+"/internal/v1/fills/"+d.String(), nil)
			if tc.auth != "" {
				req.Header.Set("Authorization", tc.auth)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Fatalf("status %s, want %d", resp.Status, tc.want)
			}
			buf := make([]byte, 64<<10)
			n, _ := io.ReadFull(resp.Body, buf)
			if tc.want != http.StatusOK && n > 200 {
				t.Fatalf("%d body bytes without the secret", n)
			}
			if tc.want == http.StatusOK && n != len(buf) {
				t.Fatalf("only %d bytes with the secret", n)
			}
		})
	}
}

// TestPeerEndpointNotOnClientAPI: the client API never routes the internal
// endpoint, even with the secret.
func TestPeerEndpointNotOnClientAPI(t *testing.T) {
	t.Parallel()
	rs := newReplicas(t, 1)
	a := rs[0]
	d, owner, _ := heldOwner(t, a, 2<<20, 35)
	defer owner.resp.Body.Close()
	hdr := http.Header{"Authorization": {"Bearer " + peerSecret}}
	for _, path := range []string{"/internal/v1/fills/" + d.String(), "/v2/internal/v1/fills/" + d.String()} {
		resp := a.get(t.Context(), http.MethodGet, path+"?offset=0", hdr)
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK || len(body) > 4096 {
			t.Fatalf("%s on the client API: %s, %d bytes", path, resp.Status, len(body))
		}
	}
}

// TestPeerOwnerUnreachable: the owner's internal endpoint cannot be reached
// while its lease is alive: the other replica waits for the commit as
// without peer streaming, and never downloads a second time.
func TestPeerOwnerUnreachable(t *testing.T) {
	t.Parallel()
	rs := newReplicas(t, 2)
	a, b := rs[0], rs[1]
	const size = 2 << 20
	d := a.seedBlob("library/peer:v1", size, 36)
	release := make(chan struct{})
	a.up.SetFault(testenv.StallBlobs(1<<20, release))
	a.up.ResetCounts()
	a.internal.Close() // the owner is up, its internal endpoint is not

	owner := startPull(t, a.env, d)
	owner.readN(t, 256<<10)
	got := make(chan error, 1)
	go func() {
		pl, err := tryPull(t, b.env, d)
		if err != nil {
			got <- err
			return
		}
		defer pl.resp.Body.Close()
		dg, n, err := readAllHash(pl.resp.Body)
		if err == nil && (dg != d || n != size) {
			err = errors.New("wrong blob " + dg.String())
		}
		got <- err
	}()
	// The waiter keeps polling: let it try the owner a few times.
	waitFor(t, "the waiter to try the owner", func() bool {
		return a.up.Count(testenv.BlobGet) == 1 && peerStreams(t, b.env, "owner_gone") > 0
	})
	close(release)
	if err := <-got; err != nil {
		t.Fatalf("waiter: %v", err)
	}
	if _, err := owner.rest(256<<10, size); err != nil {
		t.Fatalf("owner's client: %v", err)
	}
	if n := a.up.Count(testenv.BlobGet); n != 1 {
		t.Fatalf("upstream blob GETs = %d, want 1", n)
	}
}

// peerStreams reads stowage_peer_streams_total{outcome} from /metrics.
func peerStreams(t *testing.T, e *env, outcome string) int {
	resp := e.get(t.Context(), http.MethodGet, "/metrics", nil)
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	prefix := `stowage_peer_streams_total{outcome="` + outcome + `"} `
	for line := range strings.SplitSeq(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, prefix); ok {
			n, _ := strconv.Atoi(v)
			return n
		}
	}
	return 0
}

// TestPeerStreamStorm: 30 cold clients spread over three replicas on one
// shared directory pull one blob while the owner's upstream is held (see
// peerStorm): every client gets its first bytes before the upstream may
// finish, all get the verified blob, and the upstream sees one GET.
func TestPeerStreamStorm(t *testing.T) {
	t.Parallel()
	peerStorm(t, newReplicas(t, 3))
}

// TestPeerStreamOwnerRestarts: the owner's first attempt sends a wrong byte
// and breaks; its retry (from a server that ignores Range) finds the
// difference and rewinds: a new generation. The waiting replica's client,
// which had bytes of the old generation, is cut short; the waiting replica
// follows the new generation, and a later client gets the verified blob.
func TestPeerStreamOwnerRestarts(t *testing.T) {
	t.Parallel()
	rs := newReplicas(t, 2)
	a, b := rs[0], rs[1]
	const size = 4 << 20
	d := a.seedBlob("library/peer:v1", size, 38)
	release := make(chan struct{})
	a.up.SetFault(testenv.FirstBlobGet(
		testenv.Chain(testenv.CorruptThenCut(100<<10, 2<<20), testenv.StallBlobs(512<<10, release)),
		testenv.IgnoreRange(nil)))
	a.up.ResetCounts()

	owner := startPull(t, a.env, d)
	owner.readN(t, 256<<10)
	waiter := startPull(t, b.env, d)
	waiter.readN(t, 256<<10)
	close(release)
	for i, pl := range []*pull{owner, waiter} {
		if n, err := pl.rest(256<<10, size); err == nil {
			t.Fatalf("client %d: complete response (%d bytes) across a restart", i, n)
		}
	}
	// The waiting replica went along with the restart and completed its
	// fill (from the owner's new generation, or, on a loaded machine where
	// the stream stalled, from the owner's commit): no fill is left on
	// either replica and the blob is committed.
	waitFor(t, "the fills to end", func() bool {
		_, err := a.store.StatBlob(t.Context(), d)
		return err == nil && len(a.proxy.Fills()) == 0 && len(b.proxy.Fills()) == 0
	})
	t.Logf("waiter's peer streams: %d complete", peerStreams(t, b.env, "complete"))
	for _, r := range rs {
		got, n, err := fullPull(t, r.env, d)
		if err != nil || got != d || n != size {
			t.Fatalf("after the restart: %s %d %v", got, n, err)
		}
	}
	if n := a.up.Count(testenv.BlobGet); n != 2 {
		t.Fatalf("upstream blob GETs = %d, want 2 (the broken attempt and the retry)", n)
	}
}

// hangAfter sends the first n body bytes of the first response, then
// nothing (until the request ends); later responses send nothing at all:
// an owner that hangs (SIGSTOP) with its lease still alive.
func hangAfter(n int64) func(int, http.Handler) http.Handler {
	return func(i int, h http.Handler) http.Handler {
		if i != 0 {
			return h
		}
		var mu sync.Mutex
		left := n
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			budget := left
			left = 0
			mu.Unlock()
			h.ServeHTTP(&hangWriter{ResponseWriter: w, left: budget, done: r.Context().Done()}, r)
		})
	}
}

type hangWriter struct {
	http.ResponseWriter
	left int64
	done <-chan struct{}
}

func (w *hangWriter) Write(b []byte) (int, error) {
	if w.left <= 0 {
		<-w.done
		return 0, errors.New("hung")
	}
	n := min(int64(len(b)), w.left)
	m, err := w.ResponseWriter.Write(b[:n])
	w.left -= int64(m)
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
	if err != nil || m == len(b) {
		return m, err
	}
	<-w.done
	return m, errors.New("hung")
}

func (w *hangWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// TestPeerOwnerHangs: the owner's internal endpoint stops sending while its
// lease is alive: the waiting replica cuts the silent stream after the stall
// timeout, retries, then waits for the commit, and completes its fill (whose
// first bytes its client already has) from the committed blob, verified.
// One upstream GET.
func TestPeerOwnerHangs(t *testing.T) {
	t.Parallel()
	rs := newReplicasWith(t, 2, replicaOptions{stall: 200 * time.Millisecond, wrapInternal: hangAfter(300 << 10)})
	a, b := rs[0], rs[1]
	const size = 2 << 20
	d, owner, release := heldOwner(t, a, size, 39)
	waiter := startPull(t, b.env, d)
	waiter.readN(t, 256<<10)
	waitFor(t, "the waiter to give up on the owner", func() bool { return peerStreams(t, b.env, "owner_gone") > 0 })
	release()
	for i, pl := range []*pull{owner, waiter} {
		if n, err := pl.rest(256<<10, size); err != nil {
			t.Fatalf("client %d: %d bytes: %v", i, n, err)
		}
	}
	if n := a.up.Count(testenv.BlobGet); n != 1 {
		t.Fatalf("upstream blob GETs = %d, want 1", n)
	}
}

// TestPeerStrangerRepoNotServed: a client of another replica asking for
// the blob through a repository the upstream does not have it in gets 404,
// not the bytes the owner downloads for its own repository, and no link
// (a digest is no password, also across replicas).
func TestPeerStrangerRepoNotServed(t *testing.T) {
	t.Parallel()
	rs := newReplicas(t, 2)
	a, b := rs[0], rs[1]
	const size = 2 << 20
	d, owner, release := heldOwner(t, a, size, 41)

	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	resp := b.get(ctx, http.MethodGet, "/v2/library/stranger/blobs/"+d.String(), nil)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	release()
	if resp.StatusCode != http.StatusNotFound || !strings.Contains(string(body), "BLOB_UNKNOWN") {
		t.Fatalf("stranger repository on the waiting replica: %s, %d bytes %.80q", resp.Status, len(body), body)
	}
	if n, err := owner.rest(256<<10, size); err != nil {
		t.Fatalf("owner's client: %d bytes: %v", n, err)
	}
	if linked, err := b.store.BlobLinked(t.Context(), "docker.io/library/stranger", d); err != nil || linked {
		t.Fatalf("stranger repository linked: %v %v", linked, err)
	}
}
