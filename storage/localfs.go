package storage

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"

	driver "github.com/distribution/distribution/v3/registry/storage/driver"
)

// localDriver is the filesystem driver as the Store uses it. It changes two
// operations:
//
//   - PutContent writes to a temporary file in the Store's own staging
//     directory, then moves it into place; every failure removes the
//     temporary file. (The driver's own PutContent leaves <path>.<uuid>.tmp
//     beside the target when the write fails, for example on a full disk,
//     and a crash leaves it anywhere; these lie in a directory that
//     CleanStaging removes once its owner is gone.)
//   - Move syncs the directories it created and the destination directory,
//     so a committed blob or link survives a power loss once Move returns.
//     A new directory (a blob's, a link's, a tag's) is built in the staging
//     directory with its file in it and renamed into place whole: creating
//     the directory and then moving the file into it left, after a crash in
//     between, an empty link directory ("link file missing" in verify).
//   - Delete first renames what it deletes into the staging directory, then
//     removes it there. The driver's own Delete (os.RemoveAll) unlinks a
//     directory's files before the directory: a crash in between left, for
//     example, a link directory without its link file, which "proxy verify"
//     reports as a broken link. A rename is atomic; what a crash leaves in
//     the staging directory goes with it (CleanStaging).
//
// Everything goes through the wrapped driver, so a fault-injecting driver
// below sees the writes, commits and moves.
type localDriver struct {
	driver.StorageDriver
	root string
	// tmpDir is the driver path of the Store's staging directory.
	tmpDir string
}

func (l *localDriver) PutContent(ctx context.Context, p string, content []byte) error {
	tmp := l.tmpDir + "/" + randomHex(8) + ".tmp"
	w, err := l.Writer(ctx, tmp, false)
	if err != nil {
		return errors.Join(err, l.remove(ctx, tmp))
	}
	_, err = w.Write(content)
	if err == nil {
		err = w.Commit(ctx)
	}
	if err != nil {
		return errors.Join(err, ignoreNotExist(w.Cancel(ctx)), l.remove(ctx, tmp))
	}
	if err := w.Close(); err != nil {
		return errors.Join(err, l.remove(ctx, tmp))
	}
	if err := l.Move(ctx, tmp, p); err != nil {
		return errors.Join(err, l.remove(ctx, tmp))
	}
	return nil
}

// Delete removes p (a file or a directory tree) atomically, as seen by
// other processes and after a crash.
func (l *localDriver) Delete(ctx context.Context, p string) error {
	trash := l.tmpDir + "/" + randomHex(8) + ".del"
	if err := l.StorageDriver.Move(ctx, p, trash); err != nil {
		var nf driver.PathNotFoundError
		if errors.As(err, &nf) {
			return driver.PathNotFoundError{Path: p, DriverName: nf.DriverName}
		}
		// Not renamed (the error is the rename's): delete in place.
		return l.StorageDriver.Delete(ctx, p)
	}
	return l.StorageDriver.Delete(ctx, trash)
}

// remove deletes a temporary file (one file: the driver's Delete is
// atomic for it); one already gone is not an error.
func (l *localDriver) remove(ctx context.Context, p string) error {
	err := l.StorageDriver.Delete(ctx, p)
	var nf driver.PathNotFoundError
	if err == nil || errors.As(err, &nf) {
		return nil
	}
	return err
}

// moveRetries bounds how often Move builds a new directory again after
// another process created part of its path meanwhile.
const moveRetries = 5

// Move moves src to dst. When dst's directory does not exist yet (a new
// blob, link or tag), it is built in the staging directory with src in it
// and renamed into place whole, so a crash never leaves it empty. Every
// directory entry is synced before Move returns.
func (l *localDriver) Move(ctx context.Context, src, dst string) error {
	var builds []string
	defer func() {
		for _, b := range builds {
			_ = os.RemoveAll(l.full(b)) // gone once renamed into place
		}
	}()
	for range moveRetries {
		top, err := l.firstMissing(path.Dir(dst))
		if err != nil || top == "" {
			if err != nil {
				return err
			}
			break
		}
		build := l.tmpDir + "/" + randomHex(8) + ".new"
		builds = append(builds, build)
		staged := build + strings.TrimPrefix(dst, top)
		if err := l.StorageDriver.Move(ctx, src, staged); err != nil {
			return err
		}
		src = staged
		if err := syncUp(l.full(path.Dir(staged)), l.full(build)); err != nil {
			return err
		}
		err = l.StorageDriver.Move(ctx, build, top)
		if err == nil {
			return syncDir(l.full(path.Dir(top)))
		}
		if !dirTaken(err) {
			return err
		}
		// Another process created top meanwhile: go again, into what
		// exists now.
	}
	dir := l.full(path.Dir(dst))
	if err := mkdirAllSynced(dir); err != nil {
		return err
	}
	if err := l.StorageDriver.Move(ctx, src, dst); err != nil {
		return err
	}
	return syncDir(dir)
}

// dirTaken reports whether a rename failed because its target, a
// directory, exists and is not empty. (The driver wraps the rename's error
// in a driver.Error, which does not unwrap.)
func dirTaken(err error) bool {
	var de driver.Error
	if errors.As(err, &de) {
		err = de.Detail
	}
	return errors.Is(err, fs.ErrExist) || errors.Is(err, syscall.ENOTEMPTY)
}

// firstMissing returns the topmost missing directory of dir's path ("" when
// dir exists).
func (l *localDriver) firstMissing(dir string) (string, error) {
	top := ""
	for d := dir; d != "/" && d != "." && d != ""; d = path.Dir(d) {
		_, err := os.Lstat(l.full(d))
		if err == nil {
			break
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return "", err
		}
		top = d
	}
	return top, nil
}

// syncUp syncs dir and each of its parents up to and including top.
func syncUp(dir, top string) error {
	for d := dir; ; d = filepath.Dir(d) {
		if err := syncDir(d); err != nil {
			return err
		}
		if d == top || filepath.Dir(d) == d {
			return nil
		}
	}
}

func (l *localDriver) full(p string) string { return filepath.Join(l.root, filepath.FromSlash(p)) }

// mkdirAllSynced creates dir and its missing parents, and syncs the parent
// of every directory it created, so the new entries are durable.
func mkdirAllSynced(dir string) error {
	var created []string
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(d); err == nil || filepath.Dir(d) == d {
			break
		}
		created = append(created, d)
	}
	if len(created) == 0 {
		return nil
	}
	if err := os.MkdirAll(dir, 0o777); err != nil {
		return err
	}
	for i := len(created) - 1; i >= 0; i-- {
		if err := syncDir(filepath.Dir(created[i])); err != nil {
			return err
		}
	}
	return nil
}

func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync dir: %w", err)
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("sync dir %s: %w", dir, err)
	}
	return nil
}
