package storage_test

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	driver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/distribution/distribution/v3/registry/storage/driver/inmemory"
	"github.com/opencontainers/go-digest"

	"github.com/stowage/stowage/storage"
	"github.com/stowage/stowage/storage/storagetest"
)

// dyingDriver is a process that dies at its n-th write into the registry
// layout: on the filesystem a Move of a staged file or directory into
// place, on other drivers a PutContent. That write and every later one
// (into the layout or the staging directory) fail with errKilled without
// reaching the storage, as after a SIGKILL. Counting only the writes that
// change what others see puts a kill between every two of them in turn.
type dyingDriver struct {
	driver.StorageDriver
	mu   sync.Mutex
	left int
	dead bool
}

func newDying(d driver.StorageDriver, n int) *dyingDriver {
	return &dyingDriver{StorageDriver: d, left: n}
}

func (d *dyingDriver) step(p string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.dead {
		return errKilled
	}
	if strings.HasPrefix(p, "/stowage/") {
		return nil
	}
	d.left--
	if d.left <= 0 {
		d.dead = true
		return errKilled
	}
	return nil
}

func (d *dyingDriver) isDead() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.dead
}

func (d *dyingDriver) Move(ctx context.Context, src, dst string) error {
	if err := d.step(dst); err != nil {
		return err
	}
	return d.StorageDriver.Move(ctx, src, dst)
}

func (d *dyingDriver) PutContent(ctx context.Context, p string, b []byte) error {
	if err := d.step(p); err != nil {
		return err
	}
	return d.StorageDriver.PutContent(ctx, p, b)
}

func (d *dyingDriver) Writer(ctx context.Context, p string, appendTo bool) (driver.FileWriter, error) {
	if d.isDead() {
		return nil, errKilled
	}
	return d.StorageDriver.Writer(ctx, p, appendTo)
}

func (d *dyingDriver) Delete(ctx context.Context, p string) error {
	if d.isDead() {
		return errKilled
	}
	return d.StorageDriver.Delete(ctx, p)
}

// maxSteps bounds the kill points tried per write: a tag is at most a
// handful of writes.
const maxSteps = 8

// TestKilledNewTagIsWholeOrAbsent: a process killed at any point of
// writing a new tag on the filesystem leaves the tag whole or absent,
// never a tag directory without its current link; "proxy verify" is
// clean after the restart and a stock registry on the same root serves
// the tag exactly when Stowage finds it. (Before the tag was built in the
// staging directory and renamed into place whole, a kill after its time
// record or its index entry left tags/<tag>/ without current/link:
// "no current link" in verify, which the cmd/proxy crash test found.)
func TestKilledNewTagIsWholeOrAbsent(t *testing.T) {
	t.Parallel()
	for k := 1; ; k++ {
		if k > maxSteps {
			t.Fatalf("PutTag still killed at write %d", k)
		}
		if done := killNewTag(t, k); done {
			break
		}
	}
}

// killNewTag writes new tags (one in a new repository, one in a
// repository with tags) with a store that dies at its k-th write and
// checks what the restart finds. It reports whether the writes finished
// before the kill.
func killNewTag(t *testing.T, k int) bool {
	t.Helper()
	ctx := t.Context()
	root := t.TempDir()
	reg := storagetest.StartStockRegistry(t, root)
	img := reg.PushRandom(t, "lib/app:v1", 1, 512)
	md, blobs := imageDigests(t, img)
	at := time.Date(2026, 11, 30, 1, 2, 3, 4, time.UTC)
	// lib/fresh has the manifest but no tag yet: _manifests/tags is new.
	seed := newFS(t, root)
	body, err := seed.GetManifest(ctx, "lib/app", md)
	if err != nil {
		t.Fatal(err)
	}
	if err := seed.PutManifest(ctx, "lib/fresh", md, body); err != nil {
		t.Fatal(err)
	}
	for _, b := range blobs {
		if err := seed.LinkBlob(ctx, "lib/fresh", b); err != nil {
			t.Fatal(err)
		}
	}
	if err := seed.Close(); err != nil {
		t.Fatal(err)
	}

	var dd *dyingDriver
	dying, err := storage.NewFilesystem(root, storage.WithDriverWrapper(func(d driver.StorageDriver) driver.StorageDriver {
		dd = newDying(d, k)
		return dd
	}))
	if err != nil {
		t.Fatal(err)
	}
	errApp := dying.PutTag(ctx, "lib/app", "v2", md, at)
	errFresh := dying.PutTag(ctx, "lib/fresh", "v1", md, at)
	for _, err := range []error{errApp, errFresh} {
		if err != nil && !errors.Is(err, errKilled) {
			t.Fatalf("kill at write %d: PutTag: %v", k, err)
		}
	}
	storage.Crash(dying)

	after := restartVerified(ctx, t, root, fmt.Sprintf("kill at write %d: verify: ", k))
	for _, c := range []struct {
		repo, tag string
		err       error
	}{{"lib/app", "v2", errApp}, {"lib/fresh", "v1", errFresh}} {
		tag, gerr := after.GetTag(ctx, c.repo, c.tag)
		dir := localPath(root, filepath.Dir(storage.TagCurrentLinkPath(c.repo, c.tag)))
		_, serr := os.Lstat(filepath.Dir(dir))
		switch {
		case errors.Is(gerr, storage.ErrNotFound):
			if !errors.Is(serr, fs.ErrNotExist) {
				t.Errorf("kill at write %d: %s:%s has a directory but no current link (%v)", k, c.repo, c.tag, serr)
			}
			if c.err == nil {
				t.Errorf("kill at write %d: %s:%s written without error and not found", k, c.repo, c.tag)
			}
			if err := reg.Pull(t, c.repo+":"+c.tag); err == nil {
				t.Errorf("kill at write %d: the stock registry serves %s:%s, which Stowage does not find", k, c.repo, c.tag)
			}
		case gerr != nil:
			t.Errorf("kill at write %d: GetTag %s:%s: %v", k, c.repo, c.tag, gerr)
		default:
			if tag.Digest != md || !tag.FetchedAt.Equal(at) || tag.TimeUnreadable {
				t.Errorf("kill at write %d: %s:%s = %+v, want %s fetched at %s", k, c.repo, c.tag, tag, md, at)
			}
			if err := reg.Pull(t, c.repo+":"+c.tag); err != nil {
				t.Errorf("kill at write %d: the stock registry does not serve %s:%s: %v", k, c.repo, c.tag, err)
			}
		}
	}
	if tags, err := after.Tags(ctx, "lib/app"); err != nil || len(tags) == 0 || tags[0] != "v1" {
		t.Errorf("kill at write %d: tags of lib/app: %v %v", k, tags, err)
	}
	return errApp == nil && errFresh == nil
}

// TestKilledRetagNeverFreshForOldDigest: a process killed at any point of
// moving a tag to a new digest leaves the tag at the old digest or the
// new one, and never the old digest with the new one's fetched-at time,
// which would serve it as freshly confirmed for a whole TTL after the
// upstream moved the tag. The tag before is Stowage's own (a time record)
// or a stock registry's (none). On the filesystem and on a driver without
// directories (inmemory, as object storage). (Before time records named
// their digest, a kill after the record reached its place did exactly
// that.)
func TestKilledRetagNeverFreshForOldDigest(t *testing.T) {
	t.Parallel()
	for _, backend := range []string{"filesystem", "inmemory"} {
		t.Run(backend, func(t *testing.T) {
			t.Parallel()
			for k := 1; ; k++ {
				if k > maxSteps {
					t.Fatalf("the retag still killed at write %d", k)
				}
				if done := killRetag(t, backend, k); done {
					break
				}
			}
		})
	}
}

func killRetag(t *testing.T, backend string, k int) bool {
	t.Helper()
	ctx := t.Context()
	const repo = "docker.io/library/app"
	old := digest.FromString("the old manifest")
	tOld := time.Date(2026, 11, 29, 23, 0, 0, 0, time.UTC)
	var (
		seed, dying *storage.Store
		putRaw      func(p string, b []byte) error
		err         error
	)
	switch backend {
	case "filesystem":
		root := t.TempDir()
		seed = newFS(t, root)
		putRaw = func(p string, b []byte) error {
			if err := os.MkdirAll(filepath.Dir(localPath(root, p)), 0o755); err != nil {
				return err
			}
			return os.WriteFile(localPath(root, p), b, 0o644)
		}
		dying, err = storage.NewFilesystem(root, storage.WithDriverWrapper(func(d driver.StorageDriver) driver.StorageDriver {
			return newDying(d, k)
		}))
		if err != nil {
			t.Fatal(err)
		}
		defer storage.Crash(dying)
	default:
		raw := inmemory.New()
		if seed, err = storage.New(raw); err != nil {
			t.Fatal(err)
		}
		defer seed.Close()
		putRaw = func(p string, b []byte) error { return raw.PutContent(ctx, p, b) }
		if dying, err = storage.New(newDying(raw, k)); err != nil {
			t.Fatal(err)
		}
		defer dying.Close()
	}
	if err := seed.PutTag(ctx, repo, "ours", old, tOld); err != nil {
		t.Fatal(err)
	}
	// A stock registry's tag: links only, no time record.
	for _, p := range []string{storage.TagCurrentLinkPath(repo, "stock"), storage.TagIndexLinkPath(repo, "stock", old)} {
		if err := putRaw(p, []byte(old)); err != nil {
			t.Fatal(err)
		}
	}
	return retagAndCheck(t, k, dying, seed)
}

// retagAndCheck moves both tags to the new digest on dying, then checks
// them on a store that restarted on the same storage.
func retagAndCheck(t *testing.T, k int, dying, after *storage.Store) bool {
	t.Helper()
	ctx := t.Context()
	const repo = "docker.io/library/app"
	old, moved := digest.FromString("the old manifest"), digest.FromString("the new manifest")
	tOld := time.Date(2026, 11, 29, 23, 0, 0, 0, time.UTC)
	tNew := tOld.Add(2 * time.Hour)
	done := true
	for _, tag := range []string{"ours", "stock"} {
		err := dying.PutTag(ctx, repo, tag, moved, tNew)
		if err != nil && !errors.Is(err, errKilled) {
			t.Fatalf("kill at write %d: PutTag: %v", k, err)
		}
		done = done && err == nil
	}
	for _, tag := range []string{"ours", "stock"} {
		got, err := after.GetTag(ctx, repo, tag)
		if err != nil {
			t.Errorf("kill at write %d: tag %s: %v", k, tag, err)
			continue
		}
		switch got.Digest {
		case moved:
			if !got.FetchedAt.Equal(tNew) || got.TimeUnreadable {
				t.Errorf("kill at write %d: tag %s at the new digest with %+v, want fetched at %s", k, tag, got, tNew)
			}
		case old:
			// Its own time (or none: the stock registry's), or unreadable
			// (stale): never the new digest's time.
			if got.FetchedAt.Equal(tNew) {
				t.Errorf("kill at write %d: tag %s serves the old digest with the new digest's fetched-at time %s (fresh for a TTL after the upstream moved it)", k, tag, got.FetchedAt)
			} else if !got.TimeUnreadable && !got.FetchedAt.IsZero() && !got.FetchedAt.Equal(tOld) {
				t.Errorf("kill at write %d: tag %s at the old digest with %+v", k, tag, got)
			}
		default:
			t.Errorf("kill at write %d: tag %s at %s", k, tag, got.Digest)
		}
	}
	return done
}

// TestConcurrentNewTag: two stores on one root (two processes) write the
// same new tag at once, to the same digest or to two digests: both
// succeed, one rename of the whole tag wins and the other writes into it,
// and the tag is consistent (its time record names its current link).
// With four writers the tag may end on one digest with another's record,
// which reads as stale, never as fresh with the other's time.
func TestConcurrentNewTag(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name    string
		writers int
		same    bool
	}{{"same digest", 2, true}, {"two digests", 2, false}, {"four writers", 4, false}} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			ctx := t.Context()
			root := t.TempDir()
			var stores []*storage.Store
			for range c.writers {
				// A slow rename into the tags directory: every writer has
				// built its tag before the first rename lands, so the
				// others' renames find it taken.
				stores = append(stores, newFS(t, root, storage.WithDriverWrapper(func(d driver.StorageDriver) driver.StorageDriver {
					fd := storagetest.NewFaultDriver(d)
					fd.Inject(storagetest.Fault{Op: storagetest.OpMove, Path: "/_manifests/tags", Delay: 5 * time.Millisecond})
					return fd
				})))
			}
			base := time.Date(2026, 11, 30, 1, 0, 0, 0, time.UTC)
			body := func(i int) string {
				if c.same {
					return `{"schemaVersion":2,"n":"one"}`
				}
				return fmt.Sprintf(`{"schemaVersion":2,"n":%d}`, i)
			}
			dgst := func(i int) digest.Digest { return digest.FromString(body(i)) }
			for round := range 16 {
				repo := fmt.Sprintf("docker.io/library/r%d", round)
				tag := "latest"
				for i := range stores {
					if err := stores[0].PutManifest(ctx, repo, dgst(i), []byte(body(i))); err != nil {
						t.Fatal(err)
					}
				}
				var wg sync.WaitGroup
				errs := make([]error, len(stores))
				for i, s := range stores {
					wg.Go(func() { errs[i] = s.PutTag(ctx, repo, tag, dgst(i), base.Add(time.Duration(i)*time.Second)) })
				}
				wg.Wait()
				for i, err := range errs {
					if err != nil {
						t.Fatalf("round %d: writer %d: %v", round, i, err)
					}
				}
				got, err := stores[0].GetTag(ctx, repo, tag)
				if err != nil {
					t.Fatalf("round %d: %v", round, err)
				}
				w := -1
				for i := range stores {
					if dgst(i) == got.Digest && (c.same || got.FetchedAt.Equal(base.Add(time.Duration(i)*time.Second))) {
						w = i
					}
				}
				switch {
				case got.TimeUnreadable && c.writers > 2:
					// Two fallback writers interleaved: stale, revalidated.
				case w < 0 || got.TimeUnreadable:
					t.Errorf("round %d: tag %+v is no writer's", round, got)
				}
			}
			res, err := stores[0].Verify(ctx, storage.VerifyOptions{})
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range res.Problems {
				t.Errorf("verify: %s", p)
			}
		})
	}
}
