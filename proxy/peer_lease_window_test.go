package proxy_test

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/opencontainers/go-digest"

	"github.com/stowage/stowage/proxy"
	"github.com/stowage/stowage/proxy/cluster"
	"github.com/stowage/stowage/proxy/internal/testenv"
	"github.com/stowage/stowage/storage"
)

// leaseHoldDriver holds the first Stat of one blob's data made while armed
// reports true, until gate is closed: an owner slow to check the store
// right after its lease was taken (a round trip to S3 under load).
type leaseHoldDriver struct {
	driver.StorageDriver
	hold atomic.Pointer[leaseHold]
}

type leaseHold struct {
	suffix string      // of the blob's data path
	armed  func() bool // hold only once this is true
	held   chan struct{}
	gate   chan struct{}
	once   sync.Once
}

func (d *leaseHoldDriver) Stat(ctx context.Context, path string) (driver.FileInfo, error) {
	if h := d.hold.Load(); h != nil && strings.HasSuffix(path, h.suffix) && h.armed() {
		first := false
		h.once.Do(func() { first = true; close(h.held) })
		if first {
			select {
			case <-h.gate:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
	}
	return d.StorageDriver.Stat(ctx, path)
}

// TestPeerStreamFromLeaseOn: replica B reads A's lease while A, which has
// just taken it, is still checking the store for the blob. B asks A for the
// stream at once; A must serve it (B waits for A's bytes) rather than
// answer "no running fill", which sent B to wait for the commit and ask
// again only a second later (peerRetry): B's clients had no byte for a
// second or, with the owner held, until the commit. Seen as a 1.02 s
// first-byte spread in TestReplicaProcessesStormS3 (cmd/proxy).
//
// Before the fix (A registered its fill for peers after that store check)
// this failed with B's peer streams owner_gone=1, complete=0.
func TestPeerStreamFromLeaseOn(t *testing.T) {
	t.Parallel()
	drv := &leaseHoldDriver{}
	asked := make(chan struct{})    // B's first request reached A's internal endpoint
	answered := make(chan struct{}) // A answered it (a status line)
	var askOnce, answerOnce sync.Once
	rs := newReplicasWith(t, 2, replicaOptions{
		storeOpts: func(i int) []storage.Option {
			if i != 0 {
				return nil
			}
			return []storage.Option{storage.WithDriverWrapper(func(d driver.StorageDriver) driver.StorageDriver {
				drv.StorageDriver = d
				return drv
			})}
		},
		wrapInternal: func(i int, h http.Handler) http.Handler {
			if i != 0 {
				return h
			}
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				askOnce.Do(func() { close(asked) })
				h.ServeHTTP(&headerNotifier{ResponseWriter: w, notify: func() { answerOnce.Do(func() { close(answered) }) }}, r)
			})
		},
	})
	a, b := rs[0], rs[1]
	const size = 2 << 20
	d := a.seedBlob("library/peer:v1", size, 41)
	a.up.SetFault(testenv.SlowBlobs(256<<10, 10*time.Millisecond))
	a.up.ResetCounts()
	h := &leaseHold{
		suffix: "/" + d.Encoded() + "/data",
		armed: func() bool {
			held, err := a.leases.Held(context.Background(), "fill:"+d.String())
			return err == nil && held
		},
		held: make(chan struct{}),
		gate: make(chan struct{}),
	}
	drv.hold.Store(h)
	var openGate sync.Once
	release := func() { openGate.Do(func() { close(h.gate) }) }
	t.Cleanup(release)

	pullOn := func(e *env) chan pullResult { return pullAsync(t, e, d) }
	onA := pullOn(a.env) // A takes the lease, then checks the store: held
	select {
	case <-h.held:
	case <-time.After(20 * time.Second):
		t.Fatal("A did not check the store after taking the lease")
	}
	onB := pullOn(b.env) // B reads A's lease and asks A for the stream
	select {
	case <-asked:
	case <-time.After(20 * time.Second):
		t.Fatal("B never asked A for the stream")
	}
	// A answers "no running fill" at once when it has not registered the
	// fill; when it has, it holds the request until it knows the size,
	// which it cannot before the store check goes on.
	select {
	case <-answered:
	case <-time.After(300 * time.Millisecond):
	}
	release()
	for name, ch := range map[string]chan pullResult{"A": onA, "B": onB} {
		select {
		case r := <-ch:
			if r.err != nil || r.got != d || r.n != size {
				t.Errorf("client of %s: %s, %d bytes, %v", name, r.got, r.n, r.err)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("client of %s: no complete response within 30s", name)
		}
	}
	gone, complete := peerStreams(t, b.env, "owner_gone"), peerStreams(t, b.env, "complete")
	if gone != 0 || complete != 1 {
		t.Errorf("B's peer streams: owner_gone=%d complete=%d; want 0 and 1 (B streamed from the owner named by the lease)", gone, complete)
	}
	if n := a.up.Count(testenv.BlobGet); n != 1 {
		t.Errorf("upstream blob GETs = %d, want 1", n)
	}
}

// headerNotifier calls notify when the handler writes its status line.
type headerNotifier struct {
	http.ResponseWriter
	notify func()
}

func (w *headerNotifier) WriteHeader(code int) {
	w.notify()
	w.ResponseWriter.WriteHeader(code)
}

func (w *headerNotifier) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (w *headerNotifier) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// windowCoord holds its replica right after it took one key's lease, until
// gate is closed: the lease in Redis names the replica, which has no fill
// to stream yet (it registers it for peers once TryAcquire returns).
type windowCoord struct {
	*cluster.RedisLeases
	key  string
	took chan struct{} // closed once the lease is taken and held
	gate chan struct{}
	once sync.Once
}

func (c *windowCoord) TryAcquire(ctx context.Context, key string) (func(), bool, error) {
	rel, ok, err := c.RedisLeases.TryAcquire(ctx, key)
	if ok && key == c.key {
		first := false
		c.once.Do(func() { first = true; close(c.took) })
		if first {
			select {
			case <-c.gate:
			case <-ctx.Done():
			}
		}
	}
	return rel, ok, err
}

// pollCounter counts its replica's lease polls (Held) once on is set.
type pollCounter struct {
	*cluster.RedisLeases
	on    atomic.Bool
	polls atomic.Int64
}

func (c *pollCounter) Held(ctx context.Context, key string) (bool, error) {
	if c.on.Load() {
		c.polls.Add(1)
	}
	return c.RedisLeases.Held(ctx, key)
}

// TestPeerAskFreshOwnerAgain: replica B reads A's lease in the instant
// between A taking it and A's fill becoming streamable, and A answers "no
// running fill". B must ask A again within a few short waits and stream
// from it, not go back to polling the lease and wait peerRetry (1 s) for
// its next ask. The window is held open by a coordinator wrapper on A
// until B's first ask was answered; B's second ask is let through once A
// is past the window (A's store check right after it, held as in
// TestPeerStreamFromLeaseOn), so the only thing measured is what B does
// after the "no": its lease polls until it has the stream (0).
//
// Before the fix this failed with B polling the lease (10 polls) and its
// next ask coming a second later.
func TestPeerAskFreshOwnerAgain(t *testing.T) {
	t.Parallel()
	drv := &leaseHoldDriver{}
	window := &windowCoord{took: make(chan struct{}), gate: make(chan struct{})}
	counter := &pollCounter{}
	var (
		asks        atomic.Int64
		firstStatus atomic.Int64
		noAt        atomic.Int64 // unix nanos of A's "no running fill"
		againAt     atomic.Int64 // of B's next ask
		windowOpen  atomic.Bool
		openOnce    sync.Once
	)
	openWindow := func() { openOnce.Do(func() { windowOpen.Store(true); close(window.gate) }) }
	t.Cleanup(openWindow)
	h := &leaseHold{
		armed: windowOpen.Load, // A's store check right after the lease: A is past the window
		held:  make(chan struct{}),
		gate:  make(chan struct{}),
	}
	var statOnce sync.Once
	releaseStat := func() { statOnce.Do(func() { close(h.gate) }) }
	t.Cleanup(releaseStat)
	rs := newReplicasWith(t, 2, replicaOptions{
		storeOpts: func(i int) []storage.Option {
			if i != 0 {
				return nil
			}
			return []storage.Option{storage.WithDriverWrapper(func(d driver.StorageDriver) driver.StorageDriver {
				drv.StorageDriver = d
				return drv
			})}
		},
		wrapCoord: func(i int, l *cluster.RedisLeases) proxy.Coordinator {
			if i == 0 {
				window.RedisLeases = l
				return window
			}
			counter.RedisLeases = l
			return counter
		},
		wrapInternal: func(i int, next http.Handler) http.Handler {
			if i != 0 {
				return next
			}
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if asks.Add(1) == 1 {
					next.ServeHTTP(&statusNotifier{ResponseWriter: w, notify: func(code int) {
						firstStatus.Store(int64(code))
						noAt.Store(time.Now().UnixNano())
						counter.on.Store(true)
						openWindow()
					}}, r)
					return
				}
				againAt.CompareAndSwap(0, time.Now().UnixNano())
				select { // A has registered its fill
				case <-h.held:
				case <-time.After(20 * time.Second):
				}
				releaseStat()
				next.ServeHTTP(w, r)
			})
		},
	})
	a, b := rs[0], rs[1]
	const size = 2 << 20
	d := a.seedBlob("library/peer:v1", size, 43)
	window.key = "fill:" + d.String()
	h.suffix = "/" + d.Encoded() + "/data"
	drv.hold.Store(h)
	a.up.SetFault(testenv.SlowBlobs(256<<10, 10*time.Millisecond))
	a.up.ResetCounts()

	pullOn := func(e *env) chan pullResult { return pullAsync(t, e, d) }
	onA := pullOn(a.env) // A takes the lease and is held in the window
	select {
	case <-window.took:
	case <-time.After(20 * time.Second):
		t.Fatal("A did not take the lease")
	}
	onB := pullOn(b.env) // B reads A's lease and asks A: "no running fill"
	for name, ch := range map[string]chan pullResult{"A": onA, "B": onB} {
		select {
		case r := <-ch:
			if r.err != nil || r.got != d || r.n != size {
				t.Errorf("client of %s: %s, %d bytes, %v", name, r.got, r.n, r.err)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("client of %s: no complete response within 30s", name)
		}
	}
	if c := firstStatus.Load(); c != http.StatusNotFound {
		t.Fatalf("A's answer to B's first ask: %d; want 404 (B asked inside the window)", c)
	}
	if again := againAt.Load(); again != 0 {
		t.Logf("B asked A again %s after A's \"no running fill\"", time.Duration(again-noAt.Load()).Round(time.Millisecond))
	}
	if n := counter.polls.Load(); n != 0 {
		t.Errorf("B polled the lease %d times after A's \"no running fill\"; want 0 (it asks the new owner again at once)", n)
	}
	if n := peerStreams(t, b.env, "complete"); n != 1 {
		t.Errorf("B's complete peer streams = %d, want 1", n)
	}
	if n := a.up.Count(testenv.BlobGet); n != 1 {
		t.Errorf("upstream blob GETs = %d, want 1", n)
	}
}

// statusNotifier calls notify with the status code the handler writes.
type statusNotifier struct {
	http.ResponseWriter
	notify func(code int)
}

func (w *statusNotifier) WriteHeader(code int) {
	w.notify(code)
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusNotifier) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// pullResult is what pullAsync's client got: the digest and length of the
// bytes it read, or why it could not.
type pullResult struct {
	got digest.Digest
	n   int64
	err error
}

// pullAsync pulls blob d from e in the background; the result arrives on
// the channel.
func pullAsync(t *testing.T, e *env, d digest.Digest) chan pullResult {
	out := make(chan pullResult, 1)
	go func() {
		pl, err := tryPull(t, e, d)
		if err != nil {
			out <- pullResult{err: err}
			return
		}
		defer pl.resp.Body.Close()
		got, n, err := readAllHash(pl.resp.Body)
		out <- pullResult{got: got, n: n, err: err}
	}()
	return out
}
