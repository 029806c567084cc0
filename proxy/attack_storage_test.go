package proxy_test

import (
	"bytes"
	"context"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/distribution/distribution/v3/registry/storage/driver"

	"github.com/stowage/stowage/config"
	"github.com/stowage/stowage/proxy/internal/testenv"
	"github.com/stowage/stowage/storage"
	"github.com/stowage/stowage/storage/storagetest"
)

// Adversarial fill tests on the storage side: a full disk under a fill, a
// staging file that vanishes, a commit that fails while clients join.

// stagingFiles lists the files left in every staging directory under root.
func stagingFiles(t *testing.T, root string) []string {
	t.Helper()
	var out []string
	_ = filepath.WalkDir(filepath.Join(root, "stowage", "staging"), func(p string, de os.DirEntry, err error) error {
		if err == nil && !de.IsDir() && filepath.Ext(p) != ".lock" {
			out = append(out, p)
		}
		return nil
	})
	return out
}

// getAll runs one GET per range concurrently and returns the answers.
func getAll(t *testing.T, e *env, path string, ranges []string) []answer {
	t.Helper()
	answers := make([]answer, len(ranges))
	var wg sync.WaitGroup
	for i, rng := range ranges {
		wg.Go(func() {
			var hdr http.Header
			if rng != "" {
				hdr = http.Header{"Range": {rng}}
			}
			answers[i] = e.fetch(t.Context(), http.MethodGet, path, hdr)
		})
	}
	wg.Wait()
	return answers
}

// TestAttackStagingDiskFull: the staging file's writes fail with ENOSPC
// halfway. Every client is still served, from the upstream without caching
// (issue 9's disk-full pass-through), with verified bytes only; nothing is
// committed, no staging file is left, and the upstream sees at most one
// more GET per client.
func TestAttackStagingDiskFull(t *testing.T) {
	t.Parallel()
	const size = 1 << 20
	root := t.TempDir()
	store, err := storage.NewFilesystem(root, storage.WithStagingWrapper(func(f *os.File) storage.StagingFile {
		return &storagetest.FaultFile{File: f, AfterBytes: size / 2, Err: storagetest.ErrNoSpace}
	}))
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, envOptions{root: root, store: store})
	d, blob := e.seedRead("library/fulldisk:v1", size, 130)
	e.up.SetFault(testenv.SlowBlobs(64<<10, time.Millisecond))
	ranges := []string{"", "bytes=-100", "bytes=0-99"}
	for i, a := range getAll(t, e, "/v2/library/fulldisk/blobs/"+d.String(), ranges) {
		neverWrong(t, "client "+ranges[i], a, blob, ranges[i])
		if !a.complete() {
			t.Errorf("client %q not served on a full disk: %s", ranges[i], a)
		}
	}
	waitNoFills(t, e)
	notCommitted(t, e, d)
	if left := stagingFiles(t, root); len(left) != 0 {
		t.Errorf("staging files left after a failed fill: %v", left)
	}
	if n := e.up.Count(testenv.BlobGet); n < 2 || n > 1+len(ranges) {
		t.Errorf("upstream blob GETs = %d, want the fill's and at most one per client", n)
	}
}

// TestAttackStagingVanishes: the first staging file is removed from its
// directory halfway (an operator, a wrong cleanup). The bytes written to
// the open file are still verified and served complete; the commit fails,
// so nothing is committed; the next pull downloads and commits.
func TestAttackStagingVanishes(t *testing.T) {
	t.Parallel()
	const size = 1 << 20
	root := t.TempDir()
	var n atomic.Int32
	store, err := storage.NewFilesystem(root, storage.WithStagingWrapper(func(f *os.File) storage.StagingFile {
		if n.Add(1) == 1 {
			return &storagetest.FaultFile{File: f, AfterBytes: size / 2, Vanish: true}
		}
		return f
	}))
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, envOptions{root: root, store: store})
	d, blob := e.seedRead("library/vanish:v1", size, 131)
	path := "/v2/library/vanish/blobs/" + d.String()
	ranges := []string{"", "bytes=-100"}
	for i, a := range getAll(t, e, path, ranges) {
		neverWrong(t, "client "+ranges[i], a, blob, ranges[i])
	}
	waitNoFills(t, e)
	notCommitted(t, e, d)
	a := e.fetch(t.Context(), http.MethodGet, path, nil)
	if !a.complete() || !bytes.Equal(a.body, blob) {
		t.Fatalf("second pull: %s", a)
	}
	waitNoFills(t, e)
	if _, err := e.store.StatBlob(context.Background(), d); err != nil {
		t.Fatalf("second pull did not commit: %v", err)
	}
	if got := e.up.Count(testenv.BlobGet); got != 2 {
		t.Errorf("upstream blob GETs = %d, want 2", got)
	}
	if left := stagingFiles(t, root); len(left) != 0 {
		t.Errorf("staging files left: %v", left)
	}
}

// TestAttackCommitFailsWhileJoining: the commit (the move into the blob
// store) is slow and then fails; a second client joins while it runs.
// Both get every verified byte; nothing is committed; the next pull
// downloads again and commits.
func TestAttackCommitFailsWhileJoining(t *testing.T) {
	t.Parallel()
	const size = 1 << 20
	root, store, fd := faultStore(t)
	e := newEnv(t, envOptions{root: root, store: store, configure: func(c *config.Config) { c.Cache.Fill.MinRate = 0 }})
	d, blob := e.seedRead("library/commitfail:v1", size, 132)
	fd.Inject(storagetest.Fault{Op: storagetest.OpMove, Path: d.Encoded(), Delay: 3 * time.Second, Err: storagetest.ErrNoSpace, Count: 1})
	path := "/v2/library/commitfail/blobs/" + d.String()
	first := make(chan answer, 1)
	go func() { first <- e.fetch(t.Context(), http.MethodGet, path, nil) }()
	waitFor(t, "every byte staged", func() bool {
		fills := e.proxy.Fills()
		return len(fills) == 1 && fills[0].Written == size
	})
	second := make(chan answer, 1)
	go func() { second <- e.fetch(t.Context(), http.MethodGet, path, http.Header{"Range": {"bytes=0-99"}}) }()
	waitFor(t, "the second client to join during the commit", func() bool {
		fills := e.proxy.Fills()
		return len(fills) == 1 && fills[0].Clients == 2
	})
	if a := <-first; !a.complete() || !bytes.Equal(a.body, blob) {
		t.Errorf("first client: %s", a)
	}
	if a := <-second; a.status != http.StatusPartialContent || !a.complete() || !bytes.Equal(a.body, blob[:100]) {
		t.Errorf("second client (joined during the failing commit): %s", a)
	}
	waitNoFills(t, e)
	notCommitted(t, e, d)
	if a := e.fetch(t.Context(), http.MethodGet, path, nil); !a.complete() || !bytes.Equal(a.body, blob) {
		t.Fatalf("third pull: %s", a)
	}
	waitNoFills(t, e)
	if _, err := e.store.StatBlob(context.Background(), d); err != nil {
		t.Fatalf("third pull did not commit: %v", err)
	}
	if got := e.up.Count(testenv.BlobGet); got != 2 {
		t.Errorf("upstream blob GETs = %d, want 2 (the failed commit, then the third pull)", got)
	}
}

// TestAttackCancelDuringCommit: the operator cancels a fill that has
// verified every byte and is committing (a slow move). The cancel ends the
// commit; the client still gets the verified blob complete (it is right),
// nothing is committed, and the upstream is not asked again.
func TestAttackCancelDuringCommit(t *testing.T) {
	t.Parallel()
	const size = 1 << 20
	root, store, fd := faultStore(t)
	e := newEnv(t, envOptions{root: root, store: store})
	d, blob := e.seedRead("library/latecancel:v1", size, 133)
	fd.Inject(storagetest.Fault{Op: storagetest.OpMove, Path: d.Encoded(), Delay: time.Minute, Count: 1})
	path := "/v2/library/latecancel/blobs/" + d.String()
	first := make(chan answer, 1)
	go func() { first <- e.fetch(t.Context(), http.MethodGet, path, nil) }()
	waitFor(t, "every byte staged", func() bool {
		fills := e.proxy.Fills()
		return len(fills) == 1 && fills[0].Written == size
	})
	waitFor(t, "the commit to start", func() bool { return fd.Calls(storagetest.OpMove) == 1 })
	if !e.proxy.CancelFill(d) {
		t.Fatal("no fill to cancel")
	}
	a := <-first
	neverWrong(t, "client", a, blob, "")
	if !a.complete() {
		t.Errorf("client of a verified fill cancelled during its commit: %s, want the verified blob", a)
	}
	waitNoFills(t, e)
	notCommitted(t, e, d)
	if n := e.up.Count(testenv.BlobGet); n != 1 {
		t.Errorf("upstream blob GETs = %d, want 1", n)
	}
}

// faultStore is a filesystem store on a fresh root whose driver injects
// the faults given to fd.
func faultStore(t *testing.T) (root string, store *storage.Store, fd *storagetest.FaultDriver) {
	t.Helper()
	root = t.TempDir()
	store, err := storage.NewFilesystem(root, storage.WithDriverWrapper(func(d driver.StorageDriver) driver.StorageDriver {
		fd = storagetest.NewFaultDriver(d)
		return fd
	}))
	if err != nil {
		t.Fatal(err)
	}
	return root, store, fd
}
