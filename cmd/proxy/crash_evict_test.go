package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/stowage/stowage/storage"
	"github.com/stowage/stowage/storage/storagetest"
	"github.com/stowage/stowage/storage/usage"
)

// Shape of the cache the eviction crash test seeds: evictRepos
// repositories of evictBlobs blobs of evictBlobSize bytes each (3.2 MiB),
// under a 512 KiB cap, so the start-up pass evicts most of them.
const (
	evictRepos    = 8
	evictBlobs    = 100
	evictBlobSize = 4 << 10
	evictCap      = 512 << 10
)

// seededRepo is one repository of the seeded cache.
type seededRepo struct {
	name  string // upstream repository, "library/app3"
	blobs []digest.Digest
}

// seedEvictionCache pushes random images to the upstream (a stock
// registry over upRoot), then lays out the cache in cacheRoot as a stock
// registry would have (the blobs and the repositories' links, manifests
// and tags, under docker.io/), and makes the cache's blobs two hours old:
// their files' modification time (when they were committed) and the
// access times a server persisted (written by the usage index's own
// access log).
func seedEvictionCache(t *testing.T, up *storagetest.StockRegistry, upRoot, cacheRoot string) []seededRepo {
	t.Helper()
	repos := make([]seededRepo, evictRepos)
	for i := range repos {
		r := seededRepo{name: fmt.Sprintf("library/app%d", i)}
		img := up.PushRandom(t, r.name+":v1", evictBlobs, evictBlobSize)
		layers, err := img.Layers()
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range layers {
			h, err := l.Digest()
			if err != nil {
				t.Fatal(err)
			}
			r.blobs = append(r.blobs, digest.Digest(h.String()))
		}
		repos[i] = r
	}
	v2 := func(root string, p ...string) string {
		return filepath.Join(append([]string{root, "docker", "registry", "v2"}, p...)...)
	}
	if err := os.MkdirAll(v2(cacheRoot, "repositories", "docker.io"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, c := range [][2]string{
		{v2(upRoot, "blobs"), v2(cacheRoot, "blobs")},
		{v2(upRoot, "repositories", "library"), v2(cacheRoot, "repositories", "docker.io", "library")},
	} {
		if out, err := exec.Command("cp", "-a", c[0], c[1]).CombinedOutput(); err != nil {
			t.Fatalf("cp: %v\n%s", err, out)
		}
	}
	cache, err := storage.NewFilesystem(cacheRoot)
	if err != nil {
		t.Fatal(err)
	}
	defer cache.Close()
	old := time.Now().Add(-2 * time.Hour)
	at := old
	idx := usage.New(func() time.Time { return at })
	for i, r := range repos {
		for j, d := range r.blobs {
			// Accesses spread over the hour before the cache was left.
			at = old.Add(time.Duration(i*evictBlobs+j) * time.Second)
			idx.Touched(d)
		}
	}
	if err := usage.NewAccessLog(cache, idx).Save(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := cache.WalkBlobs(t.Context(), func(b storage.BlobRecord) error {
		return os.Chtimes(filepath.Join(cacheRoot, filepath.FromSlash(storage.BlobDataPath(b.Digest))), old, old)
	}); err != nil {
		t.Fatal(err)
	}
	return repos
}

// countBlobs counts the blob data files under root, and their bytes.
func countBlobs(t *testing.T, root string) (n int, bytes int64) {
	t.Helper()
	top := filepath.Join(root, "docker", "registry", "v2", "blobs", "sha256")
	prefixes, err := os.ReadDir(top)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range prefixes {
		hexes, err := os.ReadDir(filepath.Join(top, p.Name()))
		if err != nil {
			continue // removed meanwhile
		}
		for _, h := range hexes {
			if fi, err := os.Stat(filepath.Join(top, p.Name(), h.Name(), "data")); err == nil {
				n++
				bytes += fi.Size()
			}
		}
	}
	return n, bytes
}

// TestCrashDuringEviction SIGKILLs the real "serve" subprocess while its
// eviction engine is in the middle of the start-up pass over a seeded
// cache (800 old blobs in 8 repositories, 3.2 MiB, a 512 KiB cap), at a
// random point after the first blob went. After each kill: "proxy verify"
// finds nothing wrong (no dangling link, no corrupt blob); a stock
// registry on the cache directory serves every blob still linked, with
// the right digest, and answers "blob unknown" for the evicted ones; a
// restarted server finishes the pass and then serves every blob of every
// repository with the right digest (the evicted ones fetched again from
// the upstream). Five rounds, each on a fresh copy of the seeded cache;
// the seed is printed (STOWAGE_CRASH_SEED replays one).
func TestCrashDuringEviction(t *testing.T) {
	if testing.Short() {
		t.Skip("starts and kills subprocesses")
	}
	rng := crashRNG(t)

	dir := t.TempDir()
	upRoot, template := filepath.Join(dir, "upstream"), filepath.Join(dir, "template")
	began := time.Now()
	up := storagetest.StartStockRegistry(t, upRoot)
	repos := seedEvictionCache(t, up, upRoot, template)
	seeded, seededBytes := countBlobs(t, template)
	t.Logf("seeded %d blobs (%d bytes) in %s", seeded, seededBytes, time.Since(began).Round(time.Millisecond))

	root := filepath.Join(dir, "cache")
	cfgFile := writeConfig(t, dir, fmt.Sprintf("upstreams:\n  docker.io:\n    endpoints: [%q]\n    internal: true\n"+
		"cache:\n  max_size: %d\n  evict_grace: 1m\nlog:\n  level: error\n", "http://"+up.Host, evictCap))
	serve := func() (*proxyProcess, string) { return serveProcess(t, "--config", cfgFile, "--root", root) }
	cut := 0 // rounds whose kill left usage above the cap: the pass was cut short
	rounds := crashRounds(t, 5, 60*time.Second, func(round int) {
		if err := os.RemoveAll(root); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command("cp", "-a", template, root).CombinedOutput(); err != nil {
			t.Fatalf("copying the seeded cache: %v\n%s", err, out)
		}

		// The start-up pass, killed at a random point after its first
		// removal.
		p, _ := serve()
		started := time.Now()
		for n, _ := countBlobs(t, root); n == seeded; n, _ = countBlobs(t, root) {
			if time.Since(started) > 30*time.Second {
				t.Fatalf("round %d: no eviction within 30s", round)
			}
			time.Sleep(time.Millisecond)
		}
		killAt := time.Duration(rng.IntN(200)) * time.Millisecond
		time.Sleep(killAt)
		p.kill()
		left, leftBytes := countBlobs(t, root)
		if leftBytes > evictCap {
			cut++
		}
		t.Logf("round %d: killed %s after the first eviction (%s after start), %d of %d blobs left (%d bytes)",
			round, killAt, time.Since(started).Round(time.Millisecond), left, seeded, leftBytes)

		checkAfterCrash(t, round, root, cfgFile, repos)

		// A restarted server finishes the pass, then serves everything.
		p, addr := serve()
		finished := false
		for range 3000 {
			if _, b := countBlobs(t, root); b <= evictCap {
				finished = true
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		if !finished {
			t.Fatalf("round %d: the restarted server did not bring usage under the cap", round)
		}
		pullEverything(t, round, addr, repos)
		p.kill()
		t.Logf("round %d: the restarted server finished the pass and served all %d blobs right (%s)",
			round, evictRepos*evictBlobs, time.Since(started).Round(time.Millisecond))
		mustVerify(t, round, "after the pulls", cfgFile, root)
	})
	t.Logf("%d of %d rounds were killed with usage still above the cap", cut, rounds)
	if cut == 0 {
		t.Error("no kill landed before the pass was done: the test did not test a cut pass")
	}
}

// checkAfterCrash: "proxy verify" is clean, and a stock registry on the
// cache directory serves every linked blob with its digest and answers 404
// for the unlinked ones; every tag still resolves.
func checkAfterCrash(t *testing.T, round int, root, cfgFile string, repos []seededRepo) {
	t.Helper()
	mustVerify(t, round, "after the crash", cfgFile, root)
	stock := storagetest.StartStockRegistry(t, root)
	linked := 0
	for _, r := range repos {
		repo := "docker.io/" + r.name
		if status, _ := call(t, http.MethodGet, "http://"+stock.Host+"/v2/"+repo+"/manifests/v1"); status != http.StatusOK {
			t.Fatalf("round %d: stock registry: %s:v1: status %d", round, repo, status)
		}
		for _, d := range r.blobs {
			link := filepath.Join(root, "docker", "registry", "v2", "repositories", filepath.FromSlash(repo), "_layers", "sha256", d.Encoded(), "link")
			_, err := os.Stat(link)
			got, ferr := fetchBlob(t.Context(), stock.Host, repo, d)
			switch {
			case err == nil && (ferr != nil || got != d):
				t.Fatalf("round %d: stock registry: linked blob %s in %s: %s, %v", round, d, repo, got, ferr)
			case err == nil:
				linked++
			case ferr == nil || ferr.Error() != "status 404":
				t.Fatalf("round %d: stock registry: unlinked blob %s in %s: %s, %v (want 404)", round, d, repo, got, ferr)
			}
		}
	}
	t.Logf("round %d: verify clean; the stock registry serves the %d linked blobs", round, linked)
}

// pullEverything GETs every blob of every repository through the proxy (8
// at a time) and checks its digest.
func pullEverything(t *testing.T, round int, addr string, repos []seededRepo) {
	t.Helper()
	type job struct {
		repo string
		d    digest.Digest
	}
	jobs := make(chan job)
	var (
		wg     sync.WaitGroup
		failed atomic.Int32
		first  sync.Once
		msg    string
	)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	for range 8 {
		wg.Go(func() {
			for j := range jobs {
				got, err := fetchBlob(ctx, addr, j.repo, j.d)
				if err != nil || got != j.d {
					failed.Add(1)
					first.Do(func() { msg = fmt.Sprintf("%s in %s: got %s, %v", j.d, j.repo, got, err) })
				}
			}
		})
	}
	n := 0
	for _, r := range repos {
		for _, d := range r.blobs {
			jobs <- job{r.name, d}
			n++
		}
	}
	close(jobs)
	wg.Wait()
	if f := failed.Load(); f > 0 {
		t.Fatalf("round %d: %d of %d blobs through the restarted proxy were wrong; first: %s", round, f, n, msg)
	}
}
