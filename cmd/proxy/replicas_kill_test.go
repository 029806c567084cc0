package main

import (
	"context"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

// TestReplicaOwnerKilled: three replicas on one directory; replica A owns
// the fills of three blobs (8 MiB each, paced to last about 4 s) and is
// SIGKILLed in the middle of them.
//
//   - Blob X is also streamed from A by clients on B and C: they see an
//     aborted response or a complete correct one, and succeed on retry;
//     the replica that takes over resumes with a Range past 0.
//   - Blob Y only had A's client: the taker streamed nothing from A, so a
//     Range past 0 means it adopted what A had staged.
//   - Blob Z likewise, but A's staged bytes are corrupted on disk after
//     the kill: the taker adopts them, finds the whole wrong, and
//     downloads again from zero; no client ever gets a complete wrong
//     blob.
//
// A is started again at once (a container restart on the same volume: its
// start-up cleanup leaves the staging of its dead incarnation to the
// takers). A's own clients see aborted responses and succeed on retry
// against another replica; afterwards "proxy verify" is clean and every blob is
// served with the right digest. The time from the kill to the taker's
// first upstream byte is printed.
func TestReplicaOwnerKilled(t *testing.T) {
	if testing.Short() {
		t.Skip("starts and kills subprocesses")
	}
	const size = 8 << 20
	up := startPacedRegistry(t, 64<<10, 30*time.Millisecond) // about 2 MB/s per download
	blobs := up.push(t, "team/app:v1", 3, size)
	x, y, z := blobs[0], blobs[1], blobs[2]
	root := filepath.Join(t.TempDir(), "cache")
	rs := newCluster(t, 3, root, up.url, "3s")
	a, b, c := rs[0], rs[1], rs[2]

	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Second)
	defer cancel()
	retryGo := make(chan struct{}) // A's clients retry once the test has looked at A's staging
	waitRetry := func(int) {
		select {
		case <-retryGo:
		case <-ctx.Done():
		}
	}
	type client struct {
		name string
		d    digest.Digest
		res  pullResult
		onA  bool
	}
	var (
		wg      sync.WaitGroup
		clients []*client
	)
	run := func(name string, d digest.Digest, on []*replicaProc, onA bool, before func(int)) {
		cl := &client{name: name, d: d, onA: onA}
		clients = append(clients, cl)
		wg.Go(func() { cl.res = pullRetry(ctx, on, 0, d, 4, before) })
	}
	// A's clients start the three fills on A; their retries go to B or C.
	run("A/X", x, []*replicaProc{a, b, c}, true, waitRetry)
	run("A/Y", y, []*replicaProc{a, c, b}, true, waitRetry)
	run("A/Z", z, []*replicaProc{a, b, c}, true, waitRetry)
	waitFor(t, 20*time.Second, "A's three upstream downloads", func() bool {
		return up.sent(x) >= 512<<10 && up.sent(y) >= 512<<10 && up.sent(z) >= 512<<10
	})
	// Clients on B and C stream X from A.
	run("B/X", x, []*replicaProc{b}, false, nil)
	run("C/X", x, []*replicaProc{c}, false, nil)
	waitFor(t, 20*time.Second, "A's downloads past 3 MiB", func() bool {
		return up.sent(x) >= 3<<20 && up.sent(y) >= 3<<20 && up.sent(z) >= 3<<20
	})
	sentAtKill := map[digest.Digest]int64{x: up.sent(x), y: up.sent(y), z: up.sent(z)}
	a.p.kill()
	killedAt := time.Now()
	// A's partial download of Z goes bad on disk before anyone adopts it
	// (the earliest adoption waits for A's lease to expire).
	if n := flipByte(t, root, z, 1<<20); n == 0 {
		t.Fatal("found no staging file of Z to corrupt")
	}
	// A restarts at once on the same volume (a container restart): its
	// start-up cleanup must leave the dead incarnation's staging to the
	// takers.
	a.start(t)
	close(retryGo)
	wg.Wait()

	for _, cl := range clients {
		if cl.res.wrong > 0 {
			t.Errorf("client %s: %d complete responses with wrong bytes", cl.name, cl.res.wrong)
		}
		if !cl.res.ok() {
			t.Errorf("client %s: no success after %d attempts: %v", cl.name, len(cl.res.attempts), cl.res.attempts)
			continue
		}
		if cl.onA && (len(cl.res.attempts) < 2 || cl.res.attempts[0] == nil) {
			t.Errorf("client %s of the killed replica: attempts %v; want its first response aborted", cl.name, cl.res.attempts)
		}
		t.Logf("client %s: %d attempt(s): %v", cl.name, len(cl.res.attempts), cl.res.attempts)
	}

	// The upstream: A's GET, then the taker's resumed one (Z: and one more
	// from zero after the corrupt adoption).
	for _, tc := range []struct {
		name string
		d    digest.Digest
		want int
	}{{"X", x, 2}, {"Y", y, 2}, {"Z", z, 3}} {
		gets := up.getsOf(tc.d)
		var desc []string
		for _, g := range gets {
			desc = append(desc, rangeDesc(g))
		}
		t.Logf("blob %s: %d upstream GETs (%s); A had been sent %d bytes at the kill", tc.name, len(gets), strings.Join(desc, ", "), sentAtKill[tc.d])
		if len(gets) != tc.want {
			t.Errorf("blob %s: %d upstream GETs, want %d", tc.name, len(gets), tc.want)
			continue
		}
		if gets[0].rangeStart > 0 {
			t.Errorf("blob %s: the first GET had a Range", tc.name)
		}
		if gets[1].rangeStart <= 0 {
			t.Errorf("blob %s: the taker's GET starts at %d; want a resume past 0", tc.name, gets[1].rangeStart)
		}
		if tc.d == z && gets[2].rangeStart > 0 {
			t.Errorf("blob Z: after the corrupt adoption the download starts at %d, want 0", gets[2].rangeStart)
		}
	}
	if gets := up.getsOf(x); len(gets) >= 2 && !gets[1].first.IsZero() {
		t.Logf("blob X: %s from the kill to the taker's first upstream byte", gets[1].first.Sub(killedAt).Round(time.Millisecond))
	}
	if gets := up.getsOf(y); len(gets) >= 2 && !gets[1].first.IsZero() {
		t.Logf("blob Y: %s from the kill to the taker's first upstream byte (resumed at %d of %d)",
			gets[1].first.Sub(killedAt).Round(time.Millisecond), gets[1].rangeStart, size)
	}

	if out, err := runOut(t, "verify", "--config", a.cfgFile, "--root", root); err != nil {
		t.Fatalf("verify after the kill: %v\n%s", err, out)
	}
	for _, d := range blobs {
		for _, r := range rs {
			got, err := fetchBlob(ctx, r.addr, "team/app", d)
			if err != nil || got != d {
				t.Errorf("blob %s from %s afterwards: %s %v", d, r.name, got, err)
			}
		}
	}
}

func rangeDesc(g blobGet) string {
	if g.rangeStart < 0 {
		return "no Range"
	}
	return "Range from " + strconv.FormatInt(g.rangeStart, 10)
}
