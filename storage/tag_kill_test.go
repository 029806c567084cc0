//go:build linux

package storage_test

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/stowage/stowage/storage"
)

const killRepo = "docker.io/library/app"

// killManifests are the two manifests the child process tags.
func killManifests() [][]byte {
	return [][]byte{[]byte(`{"schemaVersion":2,"n":0}`), []byte(`{"schemaVersion":2,"n":1}`)}
}

// TestSIGKILLDuringTagWrites: a real process writing new tags and moving
// one tag back and forth is SIGKILLed at a random moment, round after
// round on one root. After each kill and restart "proxy verify" finds no
// problem, no tag directory lacks its current link, every new tag has
// its own digest's time, and the moving tag is at one of its digests with
// that digest's time or reads as stale (never as fresh with the other
// digest's time). STOWAGE_TAGKILL_SEED replays one run.
func TestSIGKILLDuringTagWrites(t *testing.T) {
	if root := os.Getenv("STOWAGE_TEST_TAGKILL_ROOT"); root != "" {
		tagWriter(t, root, os.Getenv("STOWAGE_TEST_TAGKILL_ROUND"))
		return
	}
	// Not parallel: between fork and exec a child holds a copy of every
	// descriptor, flock'd staging locks included (see
	// TestCleanStagingRealProcesses).
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("STOWAGE_TAGKILL_SEED"); s != "" {
		var err error
		if seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("STOWAGE_TAGKILL_SEED=%d", seed)
	rng := rand.New(rand.NewPCG(seed, seed))
	ctx := t.Context()
	root := t.TempDir()
	s := newFS(t, root)
	var ds []digest.Digest
	for _, b := range killManifests() {
		d := digest.FromBytes(b)
		if err := s.PutManifest(ctx, killRepo, d, b); err != nil {
			t.Fatal(err)
		}
		ds = append(ds, d)
	}
	const rounds = 10
	written := 0
	for round := range rounds {
		n := killTagWriter(t, root, round, time.Duration(rng.IntN(200_000))*time.Microsecond)
		written += n
		if err := s.CleanStaging(ctx); err != nil {
			t.Fatal(err)
		}
		res, err := s.Verify(ctx, storage.VerifyOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range res.Problems {
			t.Errorf("round %d: verify: %s", round, p)
		}
		checkKilledTags(t, s, root, round, ds)
	}
	t.Logf("%d rounds, %d tag writes confirmed by the killed processes", rounds, written)
}

// killTagWriter runs one child until it has written for after, kills it
// and returns how many writes it reported done.
func killTagWriter(t *testing.T, root string, round int, after time.Duration) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestSIGKILLDuringTagWrites$")
	cmd.Env = append(os.Environ(), "STOWAGE_TEST_TAGKILL_ROOT="+root, "STOWAGE_TEST_TAGKILL_ROUND="+strconv.Itoa(round))
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 1024)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	select {
	case l := <-lines:
		if l != "READY" {
			t.Fatalf("round %d: child said %q", round, l)
		}
	case <-ctx.Done():
		t.Fatalf("round %d: child not ready: %v", round, ctx.Err())
	}
	time.Sleep(after)
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	done := 0
	for l := range lines {
		if strings.HasPrefix(l, "DONE ") {
			done++
		}
	}
	if err := cmd.Wait(); err == nil {
		t.Logf("round %d: the child finished before the kill", round)
	}
	return done
}

// tagWriter is the child: new tags one after another, and the tag
// "moving" moved to the other digest after each. Bounded in count.
func tagWriter(t *testing.T, root, round string) {
	s, err := storage.NewFilesystem(root)
	if err != nil {
		t.Fatal(err)
	}
	ms := killManifests()
	fmt.Println("READY")
	ctx := context.Background()
	for i := range 5000 {
		d := digest.FromBytes(ms[i%2])
		tag := "r" + round + "-" + strconv.Itoa(i)
		if err := s.PutTag(ctx, killRepo, tag, d, time.Now()); err != nil {
			t.Fatal(err)
		}
		fmt.Println("DONE", tag)
		if err := s.PutTag(ctx, killRepo, "moving", d, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
}

// checkKilledTags: every tag directory has a current link; new tags have
// their digest's time; the moving tag is at one digest with its time, or
// stale.
func checkKilledTags(t *testing.T, s *storage.Store, root string, round int, ds []digest.Digest) {
	t.Helper()
	ctx := t.Context()
	dirs, err := os.ReadDir(localPath(root, strings.TrimSuffix(storage.TagCurrentLinkPath(killRepo, "x"), "/x/current/link")))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	tags, err := s.Tags(ctx, killRepo)
	if err != nil && len(dirs) > 0 {
		t.Fatal(err)
	}
	if len(tags) != len(dirs) {
		t.Errorf("round %d: %d tag directories, %d tags with a current link", round, len(dirs), len(tags))
	}
	for _, tag := range tags {
		got, err := s.GetTag(ctx, killRepo, tag)
		if err != nil {
			t.Errorf("round %d: %s: %v", round, tag, err)
			continue
		}
		if got.Digest != ds[0] && got.Digest != ds[1] {
			t.Errorf("round %d: %s at %s", round, tag, got.Digest)
		}
		switch {
		case tag == "moving" && got.TimeUnreadable:
			// killed between its record and its link: stale
		case got.TimeUnreadable || got.FetchedAt.IsZero():
			t.Errorf("round %d: %s: %+v, want its digest's time", round, tag, got)
		}
		if tag != "moving" {
			i, _ := strconv.Atoi(tag[strings.LastIndex(tag, "-")+1:])
			if got.Digest != ds[i%2] {
				t.Errorf("round %d: %s at %s, want %s", round, tag, got.Digest, ds[i%2])
			}
		}
	}
}
