package storage

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The staging layout on the filesystem driver:
//
//	stowage/staging/<instance>.lock  held with flock by the owning Store
//	stowage/staging/<instance>/      that Store's staging files and the
//	                                 temporary files of its metadata writes
//
// An owner creates and locks its lock file before it creates its
// directory, and removes its directory before its lock file, so a
// directory whose lock file is missing or not locked has no live owner.
// flock locks belong to an open file description: two Stores in one
// process exclude each other like two processes do, and the kernel drops
// the lock when the process dies however it dies. (On NFS, Linux maps
// flock to byte-range locks the server arbitrates.) A Store that hands a
// partial download over at shutdown (HandOver) creates such a pair for it
// and unlocks it at once: to everyone else, a dead owner's.

// LeftoverAge is how long a file nobody owns must have been left untouched
// before CleanStaging removes it: staging files of the previous flat layout
// (stowage/staging/<hex>.<rand>, written by an older version that may still
// run beside this one during a rolling upgrade) and the temporary files
// (<name>.<uuid>.tmp) that the distribution filesystem driver's PutContent
// leaves beside links when a write fails or the process dies (older
// versions, or a stock registry sharing the root). A live write touches its
// file far more often than this.
const LeftoverAge = 15 * time.Minute

const lockSuffix = ".lock"

// stagingLock is a held lock on a staging directory.
type stagingLock struct {
	id   string
	path string // the lock file
	dir  string // the staging directory it guards
	f    *os.File
}

// acquireStaging creates a new staging directory under root and locks it.
func acquireStaging(root string) (*stagingLock, error) {
	var lastErr error
	for range 5 {
		id := strconv.Itoa(os.Getpid()) + "-" + randomHex(8)
		l, err := tryAcquire(root, id)
		if err == nil {
			return l, nil
		}
		if !errors.Is(err, errRetryLock) {
			return nil, err
		}
		lastErr = err
	}
	return nil, fmt.Errorf("staging lock: %w", lastErr)
}

var errRetryLock = errors.New("staging lock lost to a concurrent cleanup")

func tryAcquire(root, id string) (*stagingLock, error) {
	lp := filepath.Join(root, id+lockSuffix)
	f, err := os.OpenFile(lp, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if errors.Is(err, fs.ErrExist) {
		return nil, errRetryLock
	}
	if err != nil {
		return nil, fmt.Errorf("staging lock: %w", err)
	}
	if err := flock(f); err != nil {
		_ = f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, errRetryLock // a cleanup holds it and is removing it
		}
		return nil, fmt.Errorf("staging lock %s: %w", lp, err)
	}
	// A cleanup may have locked the new file before we did, taken it for a
	// dead owner's and removed it: then our lock guards nothing.
	if !sameFile(f, lp) {
		_ = f.Close()
		return nil, errRetryLock
	}
	dir := filepath.Join(root, id)
	if err := os.Mkdir(dir, 0o755); err != nil {
		return nil, errors.Join(fmt.Errorf("staging directory: %w", err), os.Remove(lp), f.Close())
	}
	return &stagingLock{id: id, path: lp, dir: dir, f: f}, nil
}

func flock(f *os.File) error {
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if !errors.Is(err, syscall.EINTR) {
			return err
		}
	}
}

// sameFile reports whether the open file f is still linked at path.
func sameFile(f *os.File, path string) bool {
	a, err := f.Stat()
	if err != nil {
		return false
	}
	b, err := os.Lstat(path)
	return err == nil && os.SameFile(a, b)
}

// release removes the lock file and drops the lock. The directory is
// removed first by the caller.
func (l *stagingLock) release() error {
	err := os.Remove(l.path)
	if errors.Is(err, fs.ErrNotExist) {
		err = nil
	}
	return errors.Join(err, l.f.Close())
}

// restoreStaging re-creates this Store's staging directory, and on the
// filesystem driver its lock file (locked again), after something removed
// them under the running process: an operator's rm, a cleaner of the
// temporary directory where object-storage Stores stage. Without them
// every fill failed until a restart, and a directory re-created by a
// metadata write had no lock file, so any cleanup removed it as a dead
// owner's. The lock file comes first, as at start (tryAcquire).
func (s *Store) restoreStaging() error {
	s.relock.Lock()
	defer s.relock.Unlock()
	if l := s.lock; l != nil && !sameFile(l.f, l.path) {
		if err := os.MkdirAll(filepath.Dir(l.path), 0o755); err != nil {
			return err
		}
		f, err := os.OpenFile(l.path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
		if err != nil {
			return fmt.Errorf("staging lock: %w", err)
		}
		if err := flock(f); err != nil {
			return errors.Join(fmt.Errorf("staging lock %s: %w", l.path, err), f.Close())
		}
		old := l.f
		l.f = f
		_ = old.Close()
	}
	return os.MkdirAll(s.staging, 0o755)
}

// CleanStaging removes what dead processes left on a shared root. Call it
// at start-up; it is safe while other processes use the same root:
//
//   - the staging directory of every Store whose lock is not held (its
//     process exited or crashed), with the partial fills and temporary
//     metadata files in it; directories of live Stores are left alone;
//   - files of the previous flat staging layout, and the driver's
//     <name>.<uuid>.tmp files of interrupted metadata writes anywhere in
//     the registry layout and under stowage/, once untouched for
//     LeftoverAge.
//
// Other drivers stage in a local temporary directory per process and
// write metadata atomically, so there is nothing to clean.
func (s *Store) CleanStaging(ctx context.Context) error {
	return errors.Join(s.CleanStagingDirs(ctx), s.SweepTemps(ctx))
}

// CleanStagingDirs is the cheap half of CleanStaging: it reads only the
// staging directory (dead owners' directories, old flat-layout files), so
// a server calls it before serving and runs SweepTemps in the background.
func (s *Store) CleanStagingDirs(ctx context.Context) error {
	return s.CleanStagingDirsKeeping(ctx, 0)
}

// OrphanGrace is how long a server leaves a dead owner's staging directory
// that was written to recently (CleanStagingDirsKeeping): long enough for
// the lease of the dead owner's fills to expire and another replica to
// adopt their partial downloads (Orphan), also when the dead replica
// restarts at once on the same volume and cleans up at start.
const OrphanGrace = time.Minute

// CleanStagingDirsKeeping is CleanStagingDirs, except that a dead owner's
// directory in which anything was modified within keep is left for a
// later pass: another replica may still adopt its partial downloads. A
// server calls it at start and then periodically.
func (s *Store) CleanStagingDirsKeeping(_ context.Context, keep time.Duration) error {
	if s.root == "" {
		return nil
	}
	now := time.Now()
	var recent time.Time
	if keep > 0 {
		recent = now.Add(-keep)
	}
	dir := filepath.Join(s.root, filepath.FromSlash(stagingDir))
	if err := cleanStagingDir(dir, now.Add(-LeftoverAge), recent); err != nil {
		return fmt.Errorf("clean staging: %w", err)
	}
	return nil
}

// SweepTemps is the tree-walking half of CleanStaging: it removes the
// driver's <name>.<uuid>.tmp files of interrupted metadata writes anywhere
// in the registry layout and under stowage/ once untouched for
// LeftoverAge. It walks the whole tree, so a server runs it in the
// background.
func (s *Store) SweepTemps(ctx context.Context) error {
	if s.root == "" {
		return nil
	}
	dir := filepath.Join(s.root, filepath.FromSlash(stagingDir))
	var errs []error
	for _, top := range []string{v2Root, ownRoot} {
		errs = append(errs, sweepTemps(ctx, filepath.Join(s.root, filepath.FromSlash(top)), dir, time.Now().Add(-LeftoverAge)))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("sweep temporary files: %w", err)
	}
	return nil
}

func cleanStagingDir(dir string, staleBefore, keepAfter time.Time) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range entries {
		p := filepath.Join(dir, e.Name())
		switch {
		case strings.HasSuffix(e.Name(), lockSuffix):
			errs = append(errs, removeIfDead(p, strings.TrimSuffix(p, lockSuffix), keepAfter))
		case e.IsDir():
			// A directory is created after its lock file and removed before
			// it: without its lock file, its owner is gone.
			if _, err := os.Lstat(p + lockSuffix); errors.Is(err, fs.ErrNotExist) {
				errs = append(errs, os.RemoveAll(p))
			}
		default:
			// The previous flat layout had no owner: remove what no write
			// has touched for a while.
			if fi, err := e.Info(); err == nil && fi.ModTime().Before(staleBefore) {
				errs = append(errs, ignoreNotExist(os.Remove(p)))
			}
		}
	}
	return errors.Join(errs...)
}

// removeIfDead removes a staging directory and its lock file when no one
// holds the lock, unless something in the directory was modified after
// keepAfter (zero: no such exception).
func removeIfDead(lockPath, dir string, keepAfter time.Time) error {
	f, err := os.OpenFile(lockPath, os.O_RDWR, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return nil // released meanwhile
	}
	if err != nil {
		return err
	}
	defer f.Close()
	if err := flock(f); err != nil {
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil // a live owner
		}
		return err
	}
	if !sameFile(f, lockPath) {
		return nil // removed and perhaps re-created meanwhile
	}
	if !keepAfter.IsZero() && modifiedAfter(dir, keepAfter) {
		return nil // recently dead: its fills may still be taken over
	}
	// Holding the lock: the owner is gone, and a new owner cannot take this
	// name (lock files are created with O_EXCL).
	return errors.Join(os.RemoveAll(dir), ignoreNotExist(os.Remove(lockPath)))
}

// modifiedAfter reports whether dir or an entry in it was modified after t.
func modifiedAfter(dir string, t time.Time) bool {
	if fi, err := os.Stat(dir); err == nil && fi.ModTime().After(t) {
		return true
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return false
	}
	for _, e := range entries {
		if fi, err := e.Info(); err == nil && fi.ModTime().After(t) {
			return true
		}
	}
	return false
}

// driverTemp matches the temporary files of the distribution filesystem
// driver's PutContent: <name>.<uuid>.tmp.
var driverTemp = regexp.MustCompile(`\.[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\.tmp$`)

// sweepTemps removes the driver's temporary files under top that were last
// written before staleBefore, skipping the staging directory.
func sweepTemps(ctx context.Context, top, skip string, staleBefore time.Time) error {
	var errs []error
	err := filepath.WalkDir(top, func(p string, de fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			errs = append(errs, err)
			return nil
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if de.IsDir() {
			if p == skip {
				return filepath.SkipDir
			}
			return nil
		}
		if !de.Type().IsRegular() || !driverTemp.MatchString(de.Name()) {
			return nil
		}
		if fi, err := de.Info(); err == nil && fi.ModTime().Before(staleBefore) {
			errs = append(errs, ignoreNotExist(os.Remove(p)))
		}
		return nil
	})
	return errors.Join(append(errs, err)...)
}

func ignoreNotExist(err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}
