package main

import (
	"context"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

// TestReplicasRollingRestart: three replicas on one directory serve a
// storm of cold pulls (12 blobs of 3 MiB, paced to last about 1.5 s each,
// two clients per blob on different replicas, started in six waves) while each
// replica in turn gets SIGTERM and is started again as soon as it exited.
// A stopping replica finishes its running fills (streaming them to the
// other replicas meanwhile) before it exits, so no download is lost: after
// retries every client has its blob with the right digest, and the
// upstream saw exactly one GET per blob.
func TestReplicasRollingRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("starts and stops subprocesses")
	}
	const (
		size  = 3 << 20
		n     = 12
		waves = 6
	)
	up := startPacedRegistry(t, 64<<10, 30*time.Millisecond)
	blobs := up.push(t, "team/app:v1", n, size)
	root := filepath.Join(t.TempDir(), "cache")
	rs := newCluster(t, 3, root, up.url, "")

	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Second)
	defer cancel()
	type client struct {
		d   digest.Digest
		on  int
		res pullResult
	}
	var (
		wg       sync.WaitGroup
		clients  []*client
		failures atomic.Int64
		mu       sync.Mutex
	)
	// Wave w starts the fills of n/waves blobs, each pulled by a client on
	// replica i%3 and one on the next replica (which streams it from the
	// owner); the waves are spaced so that fills run during every restart.
	var waved sync.WaitGroup
	waved.Go(func() {
		for w := range waves {
			if w > 0 {
				time.Sleep(1200 * time.Millisecond)
			}
			for i := w * n / waves; i < (w+1)*n/waves; i++ {
				for _, on := range []int{i % 3, (i + 1) % 3} {
					cl := &client{d: blobs[i], on: on}
					mu.Lock()
					clients = append(clients, cl)
					mu.Unlock()
					wg.Go(func() {
						cl.res = pullRetry(ctx, rs, on, cl.d, 20, nil)
						failures.Add(int64(len(cl.res.attempts) - 1))
					})
				}
			}
		}
	})
	// Rolling restart, one replica at a time, while the waves run.
	var restarts []string
	for _, r := range rs {
		time.Sleep(800 * time.Millisecond)
		took := r.stop(t, 40*time.Second)
		r.start(t)
		restarts = append(restarts, r.name+" drained in "+took.Round(time.Millisecond).String())
	}
	waved.Wait()
	wg.Wait()
	t.Logf("rolling restart: %v; %d failed attempts retried", restarts, failures.Load())

	for _, cl := range clients {
		if cl.res.wrong > 0 {
			t.Errorf("blob %s via %s: %d complete responses with wrong bytes", cl.d, rs[cl.on].name, cl.res.wrong)
		}
		if !cl.res.ok() {
			t.Errorf("blob %s via %s: no success after %d attempts: %v", cl.d, rs[cl.on].name, len(cl.res.attempts), cl.res.attempts)
		}
	}
	for i, d := range blobs {
		gets := up.getsOf(d)
		if len(gets) != 1 {
			var desc []string
			for _, g := range gets {
				desc = append(desc, rangeDesc(g))
			}
			t.Errorf("blob %d (%s): %d upstream GETs (%v), want 1", i, d, len(gets), desc)
		}
	}
	if out, err := runOut(t, "verify", "--config", rs[0].cfgFile, "--root", root); err != nil {
		t.Fatalf("verify after the rolling restart: %v\n%s", err, out)
	}
}
