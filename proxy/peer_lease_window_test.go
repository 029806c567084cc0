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

	type result struct {
		got digest.Digest
		n   int64
		err error
	}
	pullOn := func(e *env) chan result {
		out := make(chan result, 1)
		go func() {
			pl, err := tryPull(t, e, d)
			if err != nil {
				out <- result{err: err}
				return
			}
			defer pl.resp.Body.Close()
			got, n, err := readAllHash(pl.resp.Body)
			out <- result{got: got, n: n, err: err}
		}()
		return out
	}
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
	for name, ch := range map[string]chan result{"A": onA, "B": onB} {
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
