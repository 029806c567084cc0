package usage

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"
)

// The pull-count files, under the store's stowage/pulls/:
//
//   - d-<unix ns>-<random>: a delta, the pulls one process counted
//     between two saves, named by the time it was written. Never changed.
//   - s-<cut unix ns>-<random>: a snapshot, the sum of every delta named
//     before the cut.
//
// One line per repository: "<repository> <count> <last pull, unix s>".
//
// Reading takes the snapshot with the latest cut and adds the deltas named
// at or after it; older snapshots and older deltas are ignored, so no
// delta is ever counted twice, whatever is left on disk.
//
// Compaction writes a new snapshot whose cut lies cutMargin in the past
// (so every delta named before it has landed, even from a replica whose
// clock is a little behind), at most once per compactEvery across every
// process sharing the store. It then deletes only what the snapshot it
// started from already covered (older deltas and snapshots), never what
// it has just summed: two replicas compacting at once write two correct
// snapshots and delete nothing the other still needs, and a reader that
// listed the files before the previous snapshot appeared is at least
// compactEvery old.
const (
	cutMargin    = 15 * time.Minute
	compactEvery = 15 * time.Minute
)

// pullFile is a parsed file name.
type pullFile struct {
	name     string
	snapshot bool
	at       time.Time // a delta's write time, a snapshot's cut
}

func parsePullName(name string) (pullFile, bool) {
	kind, rest, ok := strings.Cut(name, "-")
	if !ok || (kind != "d" && kind != "s") {
		return pullFile{}, false
	}
	ns, _, ok := strings.Cut(rest, "-")
	if !ok {
		return pullFile{}, false
	}
	n, err := strconv.ParseInt(ns, 10, 64)
	if err != nil || n < 0 {
		return pullFile{}, false
	}
	return pullFile{name: name, snapshot: kind == "s", at: time.Unix(0, n)}, true
}

func deltaName(t time.Time) string    { return pullName("d", t) }
func snapshotName(t time.Time) string { return pullName("s", t) }

func pullName(kind string, t time.Time) string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return fmt.Sprintf("%s-%019d-%s", kind, t.UnixNano(), hex.EncodeToString(b))
}

// pullSet is the files of one listing, sorted into the snapshot that
// counts and the rest.
type pullSet struct {
	files map[string][]byte
	// best is the snapshot with the latest cut (ok false: none).
	best   pullFile
	ok     bool
	deltas []pullFile
	snaps  []pullFile
}

func readPullSet(ctx context.Context, rec Records) (*pullSet, error) {
	files, err := rec.Records(ctx, PullsKind)
	if err != nil {
		return nil, fmt.Errorf("pull counts: %w", err)
	}
	s := &pullSet{files: files}
	for name := range files {
		f, ok := parsePullName(name)
		switch {
		case !ok:
			continue // not ours
		case !f.snapshot:
			s.deltas = append(s.deltas, f)
			continue
		}
		s.snaps = append(s.snaps, f)
		if !s.ok || f.at.After(s.best.at) || (f.at.Equal(s.best.at) && f.name > s.best.name) {
			s.best, s.ok = f, true
		}
	}
	sort.Slice(s.deltas, func(i, j int) bool { return s.deltas[i].name < s.deltas[j].name })
	return s, nil
}

// counts sums the best snapshot and the deltas named at or after its cut
// and, when before is not zero, before that time only.
func (s *pullSet) counts(before time.Time) map[string]PullCount {
	out := map[string]PullCount{}
	if s.ok {
		addPulls(out, decodePulls(s.files[s.best.name]))
	}
	for _, d := range s.deltas {
		if s.ok && d.at.Before(s.best.at) {
			continue // in the snapshot
		}
		if !before.IsZero() && !d.at.Before(before) {
			continue
		}
		addPulls(out, decodePulls(s.files[d.name]))
	}
	return out
}

// LoadPulls reads and merges every process's pull counts (what "proxy
// stats" shows; a server restores them at start).
func LoadPulls(ctx context.Context, rec Records) (map[string]PullCount, error) {
	s, err := readPullSet(ctx, rec)
	if err != nil {
		return nil, err
	}
	return s.counts(time.Time{}), nil
}

// compactPulls folds the deltas older than now-cutMargin into a new
// snapshot, unless a snapshot that recent exists or there is nothing to
// fold, then deletes what the previous snapshot covered.
func compactPulls(ctx context.Context, rec Records, now time.Time) error {
	s, err := readPullSet(ctx, rec)
	if err != nil {
		return err
	}
	cut := now.Add(-cutMargin)
	if s.ok && cut.Sub(s.best.at) < compactEvery {
		return nil
	}
	fold := false
	for _, d := range s.deltas {
		if d.at.Before(cut) && (!s.ok || !d.at.Before(s.best.at)) {
			fold = true
			break
		}
	}
	if !fold {
		return nil
	}
	if err := rec.PutRecord(ctx, PullsKind, snapshotName(cut), encodePulls(s.counts(cut))); err != nil {
		return fmt.Errorf("pull counts: snapshot: %w", err)
	}
	if !s.ok {
		return nil
	}
	var errs []error
	for _, f := range append(s.deltas, s.snaps...) {
		if f.at.Before(s.best.at) {
			errs = append(errs, rec.DeleteRecord(ctx, PullsKind, f.name))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("pull counts: compaction: %w", err)
	}
	return nil
}

func addPulls(dst, src map[string]PullCount) {
	for r, c := range src {
		dst[r] = dst[r].plus(c)
	}
}

func encodePulls(m map[string]PullCount) []byte {
	repos := make([]string, 0, len(m))
	for r := range m {
		repos = append(repos, r)
	}
	sort.Strings(repos)
	var b bytes.Buffer
	for _, r := range repos {
		c := m[r]
		fmt.Fprintf(&b, "%s %d %d\n", r, c.Count, c.Last.Unix())
	}
	return b.Bytes()
}

// decodePulls skips lines that do not parse (written by something else):
// they must not stop the others from loading.
func decodePulls(b []byte) map[string]PullCount {
	out := map[string]PullCount{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 3 {
			continue
		}
		n, err1 := strconv.ParseInt(f[1], 10, 64)
		sec, err2 := strconv.ParseInt(f[2], 10, 64)
		if err1 != nil || err2 != nil || n < 0 {
			continue
		}
		out[f[0]] = out[f[0]].plus(PullCount{Count: n, Last: time.Unix(sec, 0).UTC()})
	}
	return out
}
