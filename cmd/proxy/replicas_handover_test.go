package main

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestReplicaHandOverAtShutdown: replica A gets SIGTERM with a short
// server.shutdown_timeout (1 s) in the middle of a long download (8 MiB
// paced to about 2 MB/s) that only its own client asked for. The fill runs
// on until the deadline, is cut, and its staged bytes stay behind as an
// orphan; A's client, cut short, retries on B, which streamed nothing from
// A and yet resumes the upstream download with a Range past what A had
// received when it got SIGTERM (it adopted what A staged until the
// deadline). The bytes and digests are right, B's /metrics count the
// takeover and its bytes, nothing is left in staging, and "proxy verify"
// is clean.
//
// Before the hand-over, A's cut fill removed its staging file: B's GET had
// no Range (the download started again from zero).
func TestReplicaHandOverAtShutdown(t *testing.T) {
	if testing.Short() {
		t.Skip("starts and stops subprocesses")
	}
	const size = 8 << 20
	up := startPacedRegistry(t, 64<<10, 30*time.Millisecond) // about 2 MB/s
	layer := up.pushLayers(t, "team/app:v1", 1, size)[0]
	x := layer.Digest
	root := filepath.Join(t.TempDir(), "cache")
	rs := newCluster(t, 2, root, up.url, "3s")
	a, b := rs[0], rs[1]
	// A restarts with a deadline shorter than its download.
	cfg, err := os.ReadFile(a.cfgFile)
	if err != nil {
		t.Fatal(err)
	}
	short := strings.Replace(string(cfg), "shutdown_timeout: 30s", "shutdown_timeout: 1s", 1)
	if short == string(cfg) {
		t.Fatal("no shutdown_timeout in the replica's config")
	}
	if err := os.WriteFile(a.cfgFile, []byte(short), 0o600); err != nil {
		t.Fatal(err)
	}
	a.stop(t, 20*time.Second)
	a.start(t)

	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	aGone := make(chan struct{})
	var (
		wg  sync.WaitGroup
		res pullResult
	)
	wg.Go(func() {
		res = pullRetry(ctx, []*replicaProc{a, b}, 0, x, 3, func(int) {
			select { // the retry goes to B once A has exited
			case <-aGone:
			case <-ctx.Done():
			}
		})
	})
	waitFor(t, 20*time.Second, "A's download past 2 MiB", func() bool { return up.sent(x) >= 2<<20 })
	atTerm := up.sent(x)
	took := a.stop(t, 20*time.Second)
	atExit := up.sent(x)
	close(aGone)
	wg.Wait()
	t.Logf("A: SIGTERM at %d bytes received, exited %s later at %d", atTerm, took.Round(time.Millisecond), atExit)

	if res.wrong > 0 {
		t.Errorf("%d complete responses with wrong bytes", res.wrong)
	}
	if !res.ok() || len(res.attempts) < 2 || res.attempts[0] == nil {
		t.Fatalf("A's client: attempts %v; want the first cut at A's deadline and a success on B", res.attempts)
	}
	gets := up.getsOf(x)
	var desc []string
	for _, g := range gets {
		desc = append(desc, rangeDesc(g))
	}
	t.Logf("upstream GETs: %s", strings.Join(desc, ", "))
	if len(gets) != 2 {
		t.Fatalf("%d upstream GETs, want 2 (A's, B's resumed one)", len(gets))
	}
	resumed := gets[1].rangeStart
	if gets[0].rangeStart > 0 {
		t.Errorf("A's GET had a Range from %d", gets[0].rangeStart)
	}
	if resumed <= atTerm || resumed > atExit {
		t.Errorf("B resumed at %d; want past %d (what A had at SIGTERM: it downloaded on until the deadline) and at most %d (what A was sent)",
			resumed, atTerm, atExit)
	}

	for _, m := range []struct {
		name string
		want int64
	}{
		{`stowage_fill_takeovers_total{source="adopted"}`, 1},
		{`stowage_fill_takeovers_total{source="streamed"}`, 0},
		{`stowage_fill_takeovers_total{source="none"}`, 0},
		{`stowage_fill_inherited_bytes_total{source="adopted"}`, resumed},
		{`stowage_fill_inherited_bytes_total{source="streamed"}`, 0},
		{`stowage_fill_takeover_downloaded_bytes_total`, layer.Size - resumed},
	} {
		v, ok := metricValue(t, b.addr, m.name)
		if f, err := strconv.ParseFloat(v, 64); !ok || err != nil || int64(f) != m.want {
			t.Errorf("B's %s = %q (found %v), want %d", m.name, v, ok, m.want)
		}
	}

	if got, err := fetchBlob(ctx, b.addr, "team/app", x); err != nil || got != x {
		t.Errorf("blob from B afterwards: %s %v", got, err)
	}
	if left, err := filepath.Glob(filepath.Join(root, "stowage", "staging", "*", x.Encoded()+".*")); err != nil || len(left) > 0 {
		t.Errorf("staging files of the blob left after the takeover's commit: %v %v", left, err)
	}
	if out, err := runOut(t, "verify", "--config", b.cfgFile, "--root", root); err != nil {
		t.Fatalf("verify: %v\n%s", err, out)
	}
}
