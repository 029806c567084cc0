package usage

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
)

// Records is where an AccessLog keeps its files: the store's own record
// area (stowage/access/ on the filesystem). *storage.Store satisfies it.
type Records interface {
	PutRecord(ctx context.Context, kind, name string, data []byte) error
	DeleteRecord(ctx context.Context, kind, name string) error
	Records(ctx context.Context, kind string) (map[string][]byte, error)
}

// AccessKind is the record kind of the access files.
const AccessKind = "access"

// compactAfter is the number of access files past which Save writes one
// snapshot of every known access time and removes the files it merged.
const compactAfter = 64

// AccessLog persists an Index's access times in batches. Each Save writes
// one small file holding only the accesses since the previous Save
// (nothing when there were none); once there are many files, Save merges
// them into one snapshot. Several processes may share the directory:
// names are unique, and reading merges every file, the latest time
// winning.
//
// Format, one access per line: "<digest> <unix seconds>".
type AccessLog struct {
	rec   Records
	x     *Index
	files int // files on disk at the last Load or Save, estimated
}

// NewAccessLog returns an AccessLog persisting x's accesses into rec.
func NewAccessLog(rec Records, x *Index) *AccessLog { return &AccessLog{rec: rec, x: x} }

// Restore reads every access file into the index.
func (a *AccessLog) Restore(ctx context.Context) error {
	times, n, err := LoadAccess(ctx, a.rec)
	if err != nil {
		return err
	}
	a.x.RestoreAccess(times)
	a.files = n
	return nil
}

// Save writes the accesses since the last Save, and compacts when the
// files have piled up. On failure the accesses stay pending for the next
// Save.
func (a *AccessLog) Save(ctx context.Context) error {
	dirty := a.x.takeDirty()
	if len(dirty) > 0 {
		if err := a.rec.PutRecord(ctx, AccessKind, fileName("d"), encodeAccess(dirty)); err != nil {
			a.x.returnDirty(dirty)
			return fmt.Errorf("access times: %w", err)
		}
		a.files++
	}
	if a.files <= compactAfter {
		return nil
	}
	return a.compact(ctx)
}

// compact writes one snapshot of everything known (on disk and in
// memory) and removes the files it read.
func (a *AccessLog) compact(ctx context.Context) error {
	files, err := a.rec.Records(ctx, AccessKind)
	if err != nil {
		return fmt.Errorf("access times: %w", err)
	}
	all := a.x.Access()
	for _, b := range files {
		mergeInto(all, decodeAccess(b))
	}
	if err := a.rec.PutRecord(ctx, AccessKind, fileName("s"), encodeAccess(all)); err != nil {
		return fmt.Errorf("access times: %w", err)
	}
	var errs []error
	for name := range files {
		errs = append(errs, a.rec.DeleteRecord(ctx, AccessKind, name))
	}
	a.files = 1
	return errors.Join(errs...)
}

// LoadAccess reads and merges every access file of rec (what "proxy gc"
// uses to see a running server's recent accesses). It also returns the
// number of files read.
func LoadAccess(ctx context.Context, rec Records) (map[digest.Digest]time.Time, int, error) {
	files, err := rec.Records(ctx, AccessKind)
	if err != nil {
		return nil, 0, fmt.Errorf("access times: %w", err)
	}
	out := map[digest.Digest]time.Time{}
	for _, b := range files {
		mergeInto(out, decodeAccess(b))
	}
	return out, len(files), nil
}

func mergeInto(dst, src map[digest.Digest]time.Time) {
	for d, t := range src {
		if t.After(dst[d]) {
			dst[d] = t
		}
	}
}

// fileName is unique across processes and sorts by time.
func fileName(kind string) string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return fmt.Sprintf("%s-%019d-%s", kind, time.Now().UnixNano(), hex.EncodeToString(b))
}

func encodeAccess(m map[digest.Digest]time.Time) []byte {
	var b bytes.Buffer
	for d, t := range m {
		b.WriteString(d.String())
		b.WriteByte(' ')
		b.WriteString(strconv.FormatInt(t.Unix(), 10))
		b.WriteByte('\n')
	}
	return b.Bytes()
}

// decodeAccess skips lines that do not parse: an access time is a hint,
// and a torn or foreign line must not stop the others from loading.
func decodeAccess(b []byte) map[digest.Digest]time.Time {
	out := map[digest.Digest]time.Time{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		ds, ts, ok := strings.Cut(sc.Text(), " ")
		if !ok {
			continue
		}
		d, err := digest.Parse(ds)
		if err != nil {
			continue
		}
		sec, err := strconv.ParseInt(ts, 10, 64)
		if err != nil {
			continue
		}
		if t := time.Unix(sec, 0); t.After(out[d]) {
			out[d] = t
		}
	}
	return out
}
