package proxy_test

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
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

// s3Replica is a proxy on an S3 store (one replica of a cluster).
type s3Replica struct {
	store *storage.Store
	srv   *httptest.Server
}

func newS3Replica(t *testing.T, up *testenv.Registry, params map[string]any, coord proxy.Coordinator) *s3Replica {
	t.Helper()
	cfg := config.Default()
	cfg.Listen = "127.0.0.1:0"
	cfg.Storage = config.Storage{Driver: "s3", S3: params}
	fast := config.Upstream{
		Endpoints: []string{up.URL},
		Timeouts:  config.Timeouts{Dial: time.Second, TLSHandshake: time.Second, ResponseHeader: 5 * time.Second, Stall: 5 * time.Second},
		Retry:     config.Retry{Attempts: 3, InitialBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond},
		Internal:  true,
	}
	cfg.Upstreams = map[string]config.Upstream{"docker.io": fast}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	store, err := storage.NewS3(t.Context(), params)
	if err != nil {
		t.Fatal(err)
	}
	var opts []proxy.Option
	if coord != nil {
		opts = append(opts, proxy.WithCoordinator(coord))
	}
	p, err := proxy.New(cfg, store, func(host string, u config.Upstream) (upstream.Registry, error) {
		return upstream.New(host, u)
	}, opts...)
	if err != nil {
		t.Fatal(err)
	}
	r := &s3Replica{store: store, srv: httptest.NewServer(p)}
	t.Cleanup(func() {
		r.srv.Close()
		_ = p.Close()
		_ = store.Close()
	})
	return r
}

func getHash(ctx context.Context, url string) (digest.Digest, int64, int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", 0, 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", 0, 0, err
	}
	defer resp.Body.Close()
	h := sha256.New()
	n, err := io.Copy(h, resp.Body)
	return digest.Digest("sha256:" + hex.EncodeToString(h.Sum(nil))), n, resp.StatusCode, err
}

// TestS3ClusterOneDownload: two replicas on one S3 bucket (a real
// S3-compatible server, SeaweedFS) coordinated through the real Redis:
// concurrent cold pulls on both cost exactly one upstream GET, every
// client gets the verified bytes, and the blob is in the bucket.
func TestS3ClusterOneDownload(t *testing.T) {
	s3srv := storagetest.StartS3(t)
	rc := cluster.NewRedisClient("127.0.0.1:6379", "", 0, 2*time.Second)
	t.Cleanup(func() { _ = rc.Close() })
	if err := rc.Ping(t.Context()).Err(); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("redis on 127.0.0.1:6379: %v", err)
		}
		t.Skipf("redis on 127.0.0.1:6379: %v", err)
	}
	var id [8]byte
	_, _ = rand.Read(id[:])
	prefix := "stowage-test-" + hex.EncodeToString(id[:]) + ":"
	leases := func() proxy.Coordinator {
		l, err := cluster.NewRedisLeases(rc, prefix, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		return l
	}

	up := testenv.Start(t, testenv.Options{})
	const size = 12 << 20 // above the driver's 5 MiB part size: a multipart upload
	img, layer := testenv.RawBlobImage(t, size, 77)
	up.Push(t, "library/s3:v1", img)
	ld, err := layer.Digest()
	if err != nil {
		t.Fatal(err)
	}
	d := digest.Digest(ld.String())
	up.SetFault(testenv.SlowBlobs(1<<20, 20*time.Millisecond))
	up.ResetCounts()

	params := s3srv.DriverParameters(s3srv.NewBucket(t), "/cache")
	a := newS3Replica(t, up, params, leases())
	b := newS3Replica(t, up, params, leases())

	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := range 8 {
		r := a
		if i%2 == 1 {
			r = b
		}
		wg.Go(func() {
			got, n, code, err := getHash(t.Context(), r.srv.URL+"/v2/library/s3/blobs/"+d.String())
			if err != nil || code != http.StatusOK || got != d || n != size {
				errs <- errors.Join(fmt.Errorf("client %d: %d, %d bytes, %s", i, code, n, got), err)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := up.Count(testenv.BlobGet); n != 1 {
		t.Errorf("upstream blob GETs across two replicas on S3 = %d, want 1", n)
	}
	if info, err := b.store.StatBlob(t.Context(), d); err != nil || info.Size != size {
		t.Fatalf("blob in the bucket: %+v, %v", info, err)
	}
	// A hit on the other replica streams from the bucket.
	up.ResetCounts()
	got, n, code, err := getHash(t.Context(), b.srv.URL+"/v2/library/s3/blobs/"+d.String())
	if err != nil || code != http.StatusOK || got != d || n != size {
		t.Fatalf("hit: %d, %d bytes, %s, %v", code, n, got, err)
	}
	if n := up.Count(testenv.BlobGet); n != 0 {
		t.Errorf("a hit went upstream (%d blob GETs)", n)
	}
}
