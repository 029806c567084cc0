package proxy_test

import (
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http/httptest"
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
	"github.com/stowage/stowage/storage/storagetest"
	"github.com/stowage/stowage/upstream"
)

// peerStorm: 30 cold clients spread over the replicas pull one blob while
// the owner's upstream is held after 1 MiB by a gate the test opens only
// once every client has its headers and first bytes — so every client got
// them before the owner's download could finish. All get the verified
// blob (hashed here), and the upstream sees one GET. The spread of first
// bytes is logged (no timing assertion).
func peerStorm(t *testing.T, rs []*replica) {
	t.Helper()
	const size = 8 << 20
	const first = 64 << 10
	d := rs[0].seedBlob("library/peer:v1", size, 37)
	release := make(chan struct{})
	rs[0].up.SetFault(testenv.Chain(testenv.SlowBlobs(256<<10, 10*time.Millisecond), testenv.StallBlobs(1<<20, release)))
	rs[0].up.ResetCounts()

	type started struct {
		pl *pull
		hs func() []byte // the digest of what was read
	}
	start := time.Now()
	firsts := make(chan time.Duration, 30)
	pulls := make(chan started, 30)
	var wg sync.WaitGroup
	for i := range 30 {
		wg.Go(func() {
			pl, err := tryPull(t, rs[i%len(rs)].env, d)
			if err != nil {
				t.Errorf("client %d: %v", i, err)
				return
			}
			h := sha256.New()
			pl.resp.Body = struct {
				io.Reader
				io.Closer
			}{io.TeeReader(pl.resp.Body, h), pl.resp.Body}
			if err := pl.tryReadN(first); err != nil {
				t.Errorf("client %d: %v", i, err)
				pl.resp.Body.Close()
				return
			}
			firsts <- time.Since(start)
			pulls <- started{pl: pl, hs: func() []byte { return h.Sum(nil) }}
		})
	}
	wg.Wait() // every client has bytes; the upstream is still held
	if t.Failed() {
		close(release)
		t.FailNow()
	}
	close(firsts)
	close(pulls)
	lo, hi := time.Hour, time.Duration(0)
	for f := range firsts {
		lo, hi = min(lo, f), max(hi, f)
	}
	t.Logf("first 64 KiB on %d replicas: fastest client after %s, slowest after %s (spread %s), all before the owner's download could end",
		len(rs), lo, hi, hi-lo)
	close(release)
	for s := range pulls {
		wg.Go(func() {
			n, err := s.pl.rest(first, size)
			if err != nil {
				t.Errorf("client: %d bytes: %v", n, err)
				return
			}
			if got := digest.Digest("sha256:" + hex.EncodeToString(s.hs())); got != d {
				t.Errorf("client got %s, want %s", got, d)
			}
		})
	}
	wg.Wait()
	if n := rs[0].up.Count(testenv.BlobGet); n != 1 {
		t.Fatalf("upstream blob GETs = %d, want 1", n)
	}
}

// TestPeerStreamStormS3 is TestPeerStreamStorm with the three replicas on
// one bucket of a real S3-compatible server (SeaweedFS) instead of a shared
// directory. Not parallel: storagetest.StartS3 sets the environment.
func TestPeerStreamStormS3(t *testing.T) {
	s3srv := storagetest.StartS3(t)
	c, prefix := testenv.Redis(t)
	params := s3srv.DriverParameters(s3srv.NewBucket(t), "/cache")
	up := testenv.Start(t, testenv.Options{})
	rs := make([]*replica, 3)
	for i := range rs {
		leases, err := cluster.NewRedisLeases(c, prefix, 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		internal := httptest.NewUnstartedServer(nil)
		if err := leases.Advertise("http://" + internal.Listener.Addr().String()); err != nil {
			t.Fatal(err)
		}
		e := &env{t: t, up: up, upstream: up.URL, clock: &fakeClock{now: time.Now()}}
		cfg := config.Default()
		cfg.Listen = "127.0.0.1:0"
		cfg.Storage = config.Storage{Driver: "s3", S3: params}
		cfg.Upstreams = map[string]config.Upstream{"docker.io": {
			Endpoints: []string{up.URL},
			Timeouts:  config.Timeouts{Dial: time.Second, TLSHandshake: time.Second, ResponseHeader: 5 * time.Second, Stall: 10 * time.Second},
			Retry:     config.Retry{Attempts: 3, InitialBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond},
			Internal:  true,
		}}
		if err := cfg.Validate(); err != nil {
			t.Fatal(err)
		}
		e.cfg = cfg
		store, err := storage.NewS3(t.Context(), params)
		if err != nil {
			t.Fatal(err)
		}
		e.store = store
		p, err := proxy.New(cfg, store, func(host string, u config.Upstream) (upstream.Registry, error) {
			return upstream.New(host, u)
		}, proxy.WithCoordinator(leases), proxy.WithPeers(proxy.PeerConfig{Secret: []byte(peerSecret)}))
		if err != nil {
			t.Fatal(err)
		}
		e.proxy = p
		e.srv = httptest.NewServer(p)
		e.host = strings.TrimPrefix(e.srv.URL, "http://")
		internal.Config.Handler = p.PeerHandler()
		internal.Start()
		t.Cleanup(func() {
			internal.Close()
			e.srv.Close()
			_ = p.Close()
			_ = store.Close()
		})
		rs[i] = &replica{env: e, internal: internal, leases: leases}
	}
	peerStorm(t, rs)
}
