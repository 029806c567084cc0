package main

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/stowage/stowage/storage/storagetest"
)

// execMainEnv makes this test binary run the proxy's main() instead of the
// tests: the crash test starts the real command as a subprocess it can
// SIGKILL.
const execMainEnv = "STOWAGE_TEST_EXEC_MAIN"

func init() {
	if os.Getenv(execMainEnv) == "1" {
		main()
		os.Exit(0)
	}
}

// proxyProcess is one "proxy" subprocess.
type proxyProcess struct {
	cmd  *exec.Cmd
	done chan struct{}
}

// startProcess runs "proxy args..." as a subprocess.
func startProcess(t *testing.T, args ...string) *proxyProcess {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...) //nolint:gosec // the test binary itself
	cmd.Env = append(os.Environ(), execMainEnv+"=1")
	cmd.Stdout, cmd.Stderr = io.Discard, os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proxyProcess{cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(p.done) }()
	t.Cleanup(p.kill)
	return p
}

// kill sends SIGKILL and waits for the process to be gone.
func (p *proxyProcess) kill() {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// waitHealthy waits for /healthz on addr, bounded.
func waitHealthy(t *testing.T, addr string) {
	t.Helper()
	for range 500 {
		resp, err := http.Get("http://" + addr + "/healthz")
		if err == nil {
			resp.Body.Close()
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("the proxy did not answer /healthz")
}

// serveProcess starts "serve" as a subprocess on a free address with
// args, and returns it with the address once /healthz answers.
func serveProcess(t *testing.T, args ...string) (*proxyProcess, string) {
	t.Helper()
	addr := freeAddr(t)
	p := startProcess(t, append([]string{"serve", "--listen", addr}, args...)...)
	waitHealthy(t, addr)
	return p, addr
}

// crashRNG returns the random source of a crash test's kill points, seeded
// from the clock or STOWAGE_CRASH_SEED, and logs the seed to replay it.
func crashRNG(t *testing.T) *rand.Rand {
	t.Helper()
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("STOWAGE_CRASH_SEED"); s != "" {
		if _, err := fmt.Sscan(s, &seed); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("seed %d (STOWAGE_CRASH_SEED=%d replays it)", seed, seed)
	return rand.New(rand.NewPCG(seed, 0)) //nolint:gosec // a test's kill points
}

// crashRounds runs round up to n times, stopping early (and saying so)
// once budget has passed, and returns how many rounds ran.
func crashRounds(t *testing.T, n int, budget time.Duration, round func(round int)) int {
	t.Helper()
	deadline := time.Now().Add(budget)
	for i := range n {
		if time.Now().After(deadline) {
			t.Logf("stopping after %d rounds (time bound)", i)
			return i
		}
		round(i)
	}
	return n
}

// mustVerify runs "proxy verify" on the cache and fails round's test
// unless it finds nothing wrong; when says at which point.
func mustVerify(t *testing.T, round int, when, cfgFile, root string) {
	t.Helper()
	if out, err := runOut(t, "verify", "--config", cfgFile, "--root", root); err != nil {
		t.Fatalf("round %d: verify %s: %v\n%s", round, when, err, out)
	}
}

// fetchBlob GETs a blob and returns the digest of the bytes received, or
// the error that cut the response short.
func fetchBlob(ctx context.Context, addr, repo string, d digest.Digest) (digest.Digest, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/v2/"+repo+"/blobs/"+d.String(), nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("status %d", resp.StatusCode)
	}
	return digest.SHA256.FromReader(resp.Body)
}

// TestCrashSafety runs the real command as a subprocess and SIGKILLs it at
// random points while 20 blobs are being filled at once, then SIGKILLs a
// removal pass ("proxy gc --grace 0s", which deletes links and blobs as
// eviction does) at a random point; after each round "proxy verify" finds
// nothing wrong and a restarted server serves every blob with the right
// digest. Five rounds; the seed is printed (STOWAGE_CRASH_SEED replays one).
func TestCrashSafety(t *testing.T) {
	if testing.Short() {
		t.Skip("starts and kills subprocesses")
	}
	rng := crashRNG(t)

	up := storagetest.StartStockRegistry(t, t.TempDir())
	img := up.PushRandom(t, "library/app:v1", 20, 1<<20)
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	var blobs []digest.Digest
	for _, l := range layers {
		h, err := l.Digest()
		if err != nil {
			t.Fatal(err)
		}
		blobs = append(blobs, digest.Digest(h.String()))
	}
	dir := t.TempDir()
	root := filepath.Join(dir, "cache")
	cfgFile := writeConfig(t, dir, fmt.Sprintf("upstreams:\n  docker.io:\n    endpoints: [%q]\n    internal: true\nlog:\n  level: error\n", "http://"+up.Host))
	serve := func() (*proxyProcess, string) { return serveProcess(t, "--config", cfgFile, "--root", root) }
	crashRounds(t, 5, 50*time.Second, func(round int) {
		// 20 concurrent fills, killed at a random point.
		p, addr := serve()
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		for _, d := range blobs {
			wg.Go(func() { _, _ = fetchBlob(ctx, addr, "library/app", d) })
		}
		killAt := time.Duration(rng.IntN(300)) * time.Millisecond
		time.Sleep(killAt)
		p.kill()
		cancel()
		wg.Wait()

		// A removal pass, killed at a random point.
		gc := startProcess(t, "gc", "--config", cfgFile, "--root", root, "--grace", "0s")
		gcAt := time.Duration(rng.IntN(40)) * time.Millisecond
		time.Sleep(gcAt)
		gc.kill()
		t.Logf("round %d: server killed after %s, gc after %s", round, killAt, gcAt)

		mustVerify(t, round, "after the crash", cfgFile, root)
		p, addr = serve()
		for _, d := range blobs {
			got, err := fetchBlob(context.Background(), addr, "library/app", d)
			if err != nil || got != d {
				t.Fatalf("round %d: blob %s after restart: %s, %v", round, d, got, err)
			}
		}
		p.kill()
	})
}
