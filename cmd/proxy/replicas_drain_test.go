package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

// openBlob starts a blob GET and reads its first n body bytes.
func openBlob(ctx context.Context, addr string, d digest.Digest, n int64) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/v2/team/app/blobs/"+d.String(), nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return nil, fmt.Errorf("status %s", resp.Status)
	}
	if _, err := io.CopyN(io.Discard, resp.Body, n); err != nil {
		resp.Body.Close()
		return nil, err
	}
	return resp, nil
}

// TestReplicaDrainKeepsPeerStreaming: replica A owns a fill that only
// another replica's client still wants (A's own client left), and gets
// SIGTERM. While A drains, its fill goes on (the upstream is held after
// 1 MiB, so it cannot end) and a client that asks replica C for the blob
// meanwhile streams it from A: A's internal listener stays open until the
// fill it serves ends. Then the upstream goes on, every client gets the
// blob, the upstream saw one GET, and A exits.
//
// Before the fix A closed its internal listener as soon as no client of
// its own was connected: C could not reach A and waited for the commit,
// which could not come while the upstream was held (the test timed out
// waiting for C's first bytes).
func TestReplicaDrainKeepsPeerStreaming(t *testing.T) {
	if testing.Short() {
		t.Skip("starts and stops subprocesses")
	}
	const size = 4 << 20
	up := startPacedRegistry(t, 64<<10, 5*time.Millisecond)
	up.gate, up.gateAt = make(chan struct{}), 1<<20
	defer up.openGate()
	x := up.push(t, "team/app:v1", 1, size)[0]
	root := filepath.Join(t.TempDir(), "cache")
	rs := newCluster(t, 3, root, up.url, "")
	a, b, c := rs[0], rs[1], rs[2]

	ctx, cancel := context.WithTimeout(t.Context(), 40*time.Second)
	defer cancel()
	actx, leaveA := context.WithCancel(ctx)
	onA, err := openBlob(actx, a.addr, x, 64<<10) // A takes the lease and downloads
	if err != nil {
		t.Fatal(err)
	}
	onB, err := openBlob(ctx, b.addr, x, 64<<10) // B streams it from A
	if err != nil {
		t.Fatal(err)
	}
	defer onB.Body.Close()
	leaveA() // A's own client leaves; B's stream keeps the fill wanted
	onA.Body.Close()

	if err := a.p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "A's client listener to close", func() bool {
		conn, err := net.DialTimeout("tcp", a.addr, time.Second)
		if err != nil {
			return true
		}
		conn.Close()
		return false
	})
	// A drains. A client of C wants the blob now: it gets bytes from A's
	// running fill although the upstream is still held.
	got := make(chan error, 1)
	go func() {
		resp, err := openBlob(ctx, c.addr, x, 256<<10)
		if err == nil {
			resp.Body.Close()
		}
		got <- err
	}()
	select {
	case err := <-got:
		if err != nil {
			t.Fatalf("client of C while A drains: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a client of C got no byte of A's running fill within 10s while A drained (A's internal listener closed before its fill ended?)")
	}
	select {
	case <-a.p.done:
		t.Fatal("A exited while its fill ran")
	default:
	}
	up.openGate()
	if n, err := io.Copy(io.Discard, onB.Body); err != nil || n != onB.ContentLength-64<<10 {
		t.Fatalf("B's client: %d more bytes of %d, %v", n, onB.ContentLength, err)
	}
	select {
	case <-a.p.done:
	case <-time.After(30 * time.Second):
		t.Fatal("A did not exit after its fill ended")
	}
	for _, r := range []*replicaProc{b, c} {
		if d, err := fetchBlob(ctx, r.addr, "team/app", x); err != nil || d != x {
			t.Fatalf("blob from %s afterwards: %s %v", r.name, d, err)
		}
	}
	if gets := up.getsOf(x); len(gets) != 1 {
		t.Fatalf("%d upstream GETs, want 1", len(gets))
	}
}
