package storage

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"sort"
	"strings"
)

// createDir makes the directory dir appear whole, holding files (paths
// relative to dir, with their contents), or not at all: it writes the
// files into a new tree in the staging directory, syncs them, and renames
// the tree into place in one step, together with dir's missing parents
// (as Move does for one file). It returns false and changes nothing when
// dir exists, also when another process created it meanwhile: the caller
// then writes into the existing directory. A crash at any point leaves
// either nothing of dir or all of it (the rest is in the staging
// directory, which CleanStaging removes).
//
// Writes, commits and renames go through the wrapped driver, so a
// fault-injecting driver below sees each step.
func (l *localDriver) createDir(ctx context.Context, dir string, files map[string][]byte) (bool, error) {
	if top, err := l.firstMissing(dir); err != nil || top == "" {
		return false, err
	}
	var builds []string
	defer func() {
		for _, b := range builds {
			_ = os.RemoveAll(l.full(b)) // gone once renamed into place
		}
	}()
	tree := l.tmpDir + "/" + randomHex(8) + ".new"
	builds = append(builds, tree)
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		p := path.Join(tree, name)
		if !strings.HasPrefix(p, tree+"/") {
			return false, fmt.Errorf("storage: %q is not inside %s", name, dir)
		}
		if err := l.writeSynced(ctx, p, files[name]); err != nil {
			return false, err
		}
		if err := syncUp(l.full(path.Dir(p)), l.full(tree)); err != nil {
			return false, err
		}
	}
	// Each rename that finds part of dir's path taken meanwhile leaves
	// that part existing: the missing part only shrinks, so dir's depth
	// bounds the attempts.
	for range strings.Count(dir, "/") + 1 {
		top, err := l.firstMissing(dir)
		if err != nil || top == "" {
			return false, err
		}
		move := tree
		if top != dir {
			// Wrap the tree in the missing parents.
			wrap := l.tmpDir + "/" + randomHex(8) + ".new"
			builds = append(builds, wrap)
			staged := wrap + strings.TrimPrefix(dir, top)
			if err := l.StorageDriver.Move(ctx, tree, staged); err != nil {
				return false, err
			}
			tree = staged
			if err := syncUp(l.full(path.Dir(staged)), l.full(wrap)); err != nil {
				return false, err
			}
			move = wrap
		}
		err = l.StorageDriver.Move(ctx, move, top)
		if err == nil {
			return true, syncDir(l.full(path.Dir(top)))
		}
		if !dirTaken(err) {
			return false, err
		}
	}
	return false, fmt.Errorf("storage: create %s: its parent directories kept changing", dir)
}

// writeSynced writes one file through the driver's writer, which syncs it
// on Commit.
func (l *localDriver) writeSynced(ctx context.Context, p string, content []byte) error {
	w, err := l.Writer(ctx, p, false)
	if err != nil {
		return err
	}
	_, err = w.Write(content)
	if err == nil {
		err = w.Commit(ctx)
	}
	if err != nil {
		return errors.Join(err, ignoreNotExist(w.Cancel(ctx)))
	}
	return w.Close()
}
