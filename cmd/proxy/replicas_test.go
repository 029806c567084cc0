package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/distribution/distribution/v3/configuration"
	"github.com/distribution/distribution/v3/registry/handlers"
	"github.com/opencontainers/go-digest"
	"github.com/sirupsen/logrus"
)

// The multi-replica tests run the real binary as separate OS processes
// (the STOWAGE_TEST_EXEC_MAIN trick of crash_test.go) on one shared
// directory with the real Redis, in front of a real registry whose blob
// bodies are paced so that a fill lasts seconds.

// blobGet is one upstream blob GET as the paced registry saw it.
type blobGet struct {
	path       string
	rangeStart int64 // -1: no Range header
	start      time.Time
	first      time.Time // first body byte written (zero: none yet)
	sent       int64
}

// pacedRegistry is an in-process registry whose blob GET bodies go out
// chunk bytes every pause; it records every blob GET with its Range.
type pacedRegistry struct {
	url   string
	chunk int
	pause time.Duration

	// gate, when set, holds every body at gateAt bytes until it is closed
	// (or the request ends). Set both before the first GET.
	gate     chan struct{}
	gateAt   int64
	gateOnce sync.Once

	mu   sync.Mutex
	gets []*blobGet
}

// openGate lets every held body go on; calling it again does nothing.
func (pr *pacedRegistry) openGate() { pr.gateOnce.Do(func() { close(pr.gate) }) }

func startPacedRegistry(t *testing.T, chunk int, pause time.Duration) *pacedRegistry {
	t.Helper()
	pr := &pacedRegistry{chunk: chunk, pause: pause}
	// distribution's own registry: it answers Range requests, as the real
	// registries a resumed download goes to do.
	cfg := &configuration.Configuration{}
	cfg.Log.Level = "error"
	cfg.Log.AccessLog.Disabled = true
	cfg.Storage = configuration.Storage{"filesystem": configuration.Parameters{"rootdirectory": t.TempDir()}}
	cfg.Storage["maintenance"] = configuration.Parameters{"uploadpurging": map[any]any{"enabled": false}}
	logrus.SetOutput(io.Discard)
	appCtx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	reg := handlers.NewApp(appCtx, cfg)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet || !strings.Contains(r.URL.Path, "/blobs/sha256:") {
			reg.ServeHTTP(w, r)
			return
		}
		g := &blobGet{path: r.URL.Path, rangeStart: -1, start: time.Now()}
		if rs, ok := strings.CutPrefix(r.Header.Get("Range"), "bytes="); ok {
			from, _, _ := strings.Cut(rs, "-")
			if n, err := strconv.ParseInt(from, 10, 64); err == nil {
				g.rangeStart = n
			}
		}
		pr.mu.Lock()
		pr.gets = append(pr.gets, g)
		pr.mu.Unlock()
		reg.ServeHTTP(&pacedBody{ResponseWriter: w, pr: pr, g: g, done: r.Context().Done()}, r)
	}))
	t.Cleanup(srv.Close)
	pr.url = srv.URL
	return pr
}

// push pushes a random image of n layers of size bytes and returns the
// layers' digests.
func (pr *pacedRegistry) push(t *testing.T, repoTag string, n int, size int64) []digest.Digest {
	t.Helper()
	var out []digest.Digest
	for _, l := range pr.pushLayers(t, repoTag, n, size) {
		out = append(out, l.Digest)
	}
	return out
}

// pushLayers is push returning each layer's digest and length (a layer is
// a compressed tarball: a little longer than size).
func (pr *pacedRegistry) pushLayers(t *testing.T, repoTag string, n int, size int64) []pushedLayer {
	t.Helper()
	img := pushImage(t, pr.url, repoTag, size, int64(n))
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	var out []pushedLayer
	for _, l := range layers {
		h, err := l.Digest()
		if err != nil {
			t.Fatal(err)
		}
		n, err := l.Size()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, pushedLayer{Digest: digest.Digest(h.String()), Size: n})
	}
	return out
}

// pushedLayer is one layer pushLayers pushed.
type pushedLayer struct {
	Digest digest.Digest
	Size   int64
}

// getsOf returns copies of the GETs of blob d, in arrival order.
func (pr *pacedRegistry) getsOf(d digest.Digest) []blobGet {
	pr.mu.Lock()
	defer pr.mu.Unlock()
	var out []blobGet
	for _, g := range pr.gets {
		if strings.HasSuffix(g.path, "/blobs/"+d.String()) {
			out = append(out, *g)
		}
	}
	return out
}

// sent is how many body bytes the first GET of d has been sent so far.
func (pr *pacedRegistry) sent(d digest.Digest) int64 {
	if gs := pr.getsOf(d); len(gs) > 0 {
		return gs[0].sent
	}
	return 0
}

type pacedBody struct {
	http.ResponseWriter
	pr   *pacedRegistry
	g    *blobGet
	done <-chan struct{}
	off  int64 // body bytes written by this response
}

func (w *pacedBody) Write(b []byte) (int, error) {
	written := 0
	for len(b) > 0 {
		k := min(len(b), w.pr.chunk)
		if w.pr.gate != nil {
			if w.off >= w.pr.gateAt {
				select {
				case <-w.pr.gate:
				case <-w.done:
					return written, http.ErrAbortHandler
				}
			} else {
				k = int(min(int64(k), w.pr.gateAt-w.off))
			}
		}
		n, err := w.ResponseWriter.Write(b[:k])
		w.off += int64(n)
		w.pr.mu.Lock()
		if w.g.first.IsZero() && n > 0 {
			w.g.first = time.Now()
		}
		w.g.sent += int64(n)
		w.pr.mu.Unlock()
		written += n
		if err != nil {
			return written, err
		}
		b = b[n:]
		if f, ok := w.ResponseWriter.(http.Flusher); ok {
			f.Flush()
		}
		time.Sleep(w.pr.pause)
	}
	return written, nil
}

// replicaProc is one "proxy serve" process of a cluster; it can be
// killed, stopped (SIGTERM) and started again on the same addresses.
type replicaProc struct {
	name, addr, internal, cfgFile, logFile string
	p                                      *proxyProcess
}

const replicaSecretEnv = "STOWAGE_TEST_REPLICA_SECRET"

// newCluster writes the configs of n replicas on one shared root and starts
// them. Keys live under a fresh Redis namespace; leaseTTL "" keeps the
// default redis.lease_ttl.
func newCluster(t *testing.T, n int, root, upstreamURL, leaseTTL string) []*replicaProc {
	t.Helper()
	return newClusterOn(t, n, "storage:\n  root: "+root+"\n", upstreamURL, leaseTTL)
}

// newClusterOn is newCluster on the shared storage that storageYAML (a
// whole top-level "storage:" section) configures: a directory, or a
// bucket with storage.driver: s3.
func newClusterOn(t *testing.T, n int, storageYAML, upstreamURL, leaseTTL string) []*replicaProc {
	t.Helper()
	needRealRedis(t)
	ns := randomNamespace("test-")
	dir := t.TempDir()
	ttlLine := "" // the default
	if leaseTTL != "" {
		ttlLine = "  lease_ttl: " + leaseTTL + "\n"
	}
	out := make([]*replicaProc, n)
	for i := range out {
		r := &replicaProc{name: string(rune('A' + i)), addr: freeAddr(t), internal: freeAddr(t)}
		r.cfgFile = filepath.Join(dir, r.name+".yaml")
		r.logFile = filepath.Join(dir, r.name+".log")
		cfg := fmt.Sprintf(`%sredis:
  addr: 127.0.0.1:6379
  namespace: %s
%scluster:
  listen: %s
  advertise: http://%s
  secret_env: %s
upstreams:
  docker.io:
    endpoints: [%q]
    internal: true
server:
  shutdown_timeout: 30s
log:
  level: info
  format: text
`, storageYAML, ns, ttlLine, r.internal, r.internal, replicaSecretEnv, upstreamURL)
		if err := os.WriteFile(r.cfgFile, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		out[i] = r
	}
	for _, r := range out {
		r.start(t)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, r := range out {
				if b, err := os.ReadFile(r.logFile); err == nil {
					t.Logf("replica %s log (tail):\n%s", r.name, tail(string(b), 40))
				}
			}
		}
	})
	return out
}

func tail(s string, lines int) string {
	ls := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(ls[max(0, len(ls)-lines):], "\n")
}

// start runs the replica's process (its log appended to its log file) and
// waits for /healthz.
func (r *replicaProc) start(t *testing.T) {
	t.Helper()
	lf, err := os.OpenFile(r.logFile, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "serve", "--config", r.cfgFile, "--listen", r.addr) //nolint:gosec // the test binary itself
	cmd.Env = append(os.Environ(), execMainEnv+"=1", replicaSecretEnv+"=replica-secret-0123456789")
	cmd.Stdout, cmd.Stderr = lf, lf
	if err := cmd.Start(); err != nil {
		_ = lf.Close()
		t.Fatal(err)
	}
	p := &proxyProcess{cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); _ = lf.Close(); close(p.done) }()
	t.Cleanup(p.kill)
	r.p = p
	waitHealthy(t, r.addr)
}

// stop sends SIGTERM and waits (bounded) for the process to exit.
func (r *replicaProc) stop(t *testing.T, within time.Duration) time.Duration {
	t.Helper()
	began := time.Now()
	if err := r.p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-r.p.done:
	case <-time.After(within):
		r.p.kill()
		t.Fatalf("replica %s did not exit within %s of SIGTERM", r.name, within)
	}
	return time.Since(began)
}

// pullResult is one client's attempts at one blob.
type pullResult struct {
	attempts []error // nil entry: a complete response with the right digest
	wrong    int     // complete responses with a wrong digest (never allowed)
}

// pullRetry GETs blob d from the replicas in turn, starting at first,
// until one complete response has the right digest (bounded by attempts
// and ctx). before, if set, is waited for before each retry.
func pullRetry(ctx context.Context, rs []*replicaProc, first int, d digest.Digest, attempts int, before func(int)) pullResult {
	var res pullResult
	for i := range attempts {
		if i > 0 && before != nil {
			before(i)
		}
		r := rs[(first+i)%len(rs)]
		got, err := fetchBlob(ctx, r.addr, "team/app", d)
		if err == nil && got != d {
			res.wrong++
			err = fmt.Errorf("complete response with digest %s, want %s", got, d)
		}
		res.attempts = append(res.attempts, err)
		if err == nil || ctx.Err() != nil {
			return res
		}
		time.Sleep(100 * time.Millisecond)
	}
	return res
}

func (res pullResult) ok() bool {
	return len(res.attempts) > 0 && res.attempts[len(res.attempts)-1] == nil
}

// waitFor polls cond every 10ms until it holds or within passes.
func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// flipByte changes the byte at off in every staging file of d under root
// (a dead owner's partial download gone bad on disk).
func flipByte(t *testing.T, root string, d digest.Digest, off int64) int {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(root, "stowage", "staging", "*", d.Encoded()+".*"))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, name := range files {
		f, err := os.OpenFile(name, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		b := make([]byte, 1)
		if _, err := f.ReadAt(b, off); err == nil {
			b[0] ^= 0xff
			if _, err := f.WriteAt(b, off); err != nil {
				t.Fatal(err)
			}
			n++
		}
		_ = f.Close()
	}
	return n
}
