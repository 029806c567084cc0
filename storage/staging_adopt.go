package storage

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"
)

// Orphan is a blob's staging file that a dead process left on a shared
// root: the partial download of a fill whose owner died. A replica that
// takes the fill over reads it to resume from there instead of from byte
// zero (the bytes are unverified: the taker hashes them with the rest, and
// the digest check decides).
//
// An Orphan holds a shared flock on its dead owner's lock file while it is
// open. The owner held that lock exclusively while it lived, so getting it
// proves the owner dead; and CleanStaging, which removes a dead owner's
// directory only after taking the lock exclusively, leaves the directory
// alone until every Orphan of it is closed.
type Orphan struct {
	// File is open for reading.
	File *os.File
	// Size is the file's length when it was found.
	Size int64
	lock *os.File
}

// Close releases the file and the shared lock.
func (o *Orphan) Close() error {
	return errors.Join(o.File.Close(), o.lock.Close())
}

// Remove deletes the file (its bytes were adopted) and closes the Orphan.
func (o *Orphan) Remove() error {
	return errors.Join(ignoreNotExist(os.Remove(o.File.Name())), o.Close())
}

// Orphan returns the longest staging file of blob d that a dead process
// left on this filesystem root, or nil when there is none (or the store is
// not a local filesystem: other drivers stage in a process's own temporary
// directory, which no other replica can read). Live processes' files are
// never returned. The caller closes (or removes) the result.
func (s *Store) Orphan(d digest.Digest) (*Orphan, error) {
	if s.root == "" || s.lock == nil {
		return nil, nil
	}
	if err := d.Validate(); err != nil {
		return nil, err
	}
	dir := filepath.Join(s.root, filepath.FromSlash(stagingDir))
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("storage: look for orphaned staging: %w", err)
	}
	var best *Orphan
	var errs []error
	for _, e := range entries {
		id, ok := strings.CutSuffix(e.Name(), lockSuffix)
		if !ok || id == s.lock.id {
			continue
		}
		o, err := orphanIn(filepath.Join(dir, e.Name()), filepath.Join(dir, id), d)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if o == nil {
			continue
		}
		if best == nil || o.Size > best.Size {
			if best != nil {
				errs = append(errs, best.Close())
			}
			best = o
		} else {
			errs = append(errs, o.Close())
		}
	}
	if err := errors.Join(errs...); err != nil && best == nil {
		return nil, fmt.Errorf("storage: look for orphaned staging: %w", err)
	}
	return best, nil
}

// orphanIn returns the longest staging file of d in a dead owner's
// directory, holding a shared lock on its lock file; nil when the owner
// lives (or a cleanup is removing the directory) or holds no such file.
func orphanIn(lockPath, dir string, d digest.Digest) (*Orphan, error) {
	lf, err := os.Open(lockPath)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil // released meanwhile
	}
	if err != nil {
		return nil, err
	}
	if err := flockShared(lf); err != nil {
		_ = lf.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, nil // a live owner, or a cleanup at work
		}
		return nil, err
	}
	if !sameFile(lf, lockPath) {
		_ = lf.Close()
		return nil, nil // removed by a cleanup meanwhile
	}
	matches, err := filepath.Glob(filepath.Join(dir, d.Encoded()+".*"))
	if err != nil || len(matches) == 0 {
		_ = lf.Close()
		return nil, err
	}
	var best *os.File
	var bestSize int64 = -1
	for _, m := range matches {
		// Only a regular file is a staging file: no link is followed out
		// of the directory, and a FIFO does not block the open.
		f, err := os.OpenFile(m, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0)
		if err != nil {
			continue // removed meanwhile, or a symbolic link
		}
		fi, err := f.Stat()
		if err != nil || !fi.Mode().IsRegular() || fi.Size() <= bestSize {
			_ = f.Close()
			continue
		}
		if best != nil {
			_ = best.Close()
		}
		best, bestSize = f, fi.Size()
	}
	if best == nil {
		_ = lf.Close()
		return nil, nil
	}
	return &Orphan{File: best, Size: bestSize, lock: lf}, nil
}

func flockShared(f *os.File) error {
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_SH|unix.LOCK_NB)
		if !errors.Is(err, syscall.EINTR) {
			return err
		}
	}
}

// HandOver leaves st, the first n bytes of a partial download that this
// process stops at shutdown, for another process to adopt (Orphan) as if
// this one had died: the file is cut to n bytes, synced and moved into a
// staging directory of its own whose lock is released at once (the lock
// file stays, unlocked: the mark of a dead owner). From then on it is an
// orphan like any other: Orphan returns it to a taker, and CleanStaging
// removes it once nobody adopted it (CleanStagingDirsKeeping keeps it for
// OrphanGrace). Call it only once nothing writes to st any more.
//
// It reports false, with nothing done, when the store cannot hand files
// over (not a local filesystem: no other replica can read this process's
// staging) or n is 0; the caller then discards st as usual. On an error
// the file stays where it was.
func (s *Store) HandOver(st *Staging, n int64) (bool, error) {
	if s.root == "" || s.lock == nil || st.driverPath == "" || n <= 0 {
		return false, nil
	}
	if err := st.io.Truncate(n); err != nil {
		return false, fmt.Errorf("storage: hand over staging: %w", err)
	}
	if err := st.io.Sync(); err != nil {
		return false, fmt.Errorf("storage: hand over staging: %w", err)
	}
	l, err := acquireStaging(filepath.Join(s.root, filepath.FromSlash(stagingDir)))
	if err != nil {
		return false, fmt.Errorf("storage: hand over staging: %w", err)
	}
	src := st.File.Name()
	if err := os.Rename(src, filepath.Join(l.dir, filepath.Base(src))); err != nil {
		return false, errors.Join(fmt.Errorf("storage: hand over staging: %w", err), os.Remove(l.dir), l.release())
	}
	// Durable before the lock goes: a taker may read it at once. Closing
	// the lock file drops the flock and leaves the file.
	return true, errors.Join(syncDir(l.dir), l.f.Close())
}
