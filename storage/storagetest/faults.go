package storagetest

import (
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	driver "github.com/distribution/distribution/v3/registry/storage/driver"
)

// Op names a storage driver operation a Fault applies to.
type Op string

// The operations of a driver.StorageDriver and its FileWriter.
const (
	OpGetContent Op = "GetContent"
	OpPutContent Op = "PutContent"
	OpReader     Op = "Reader"
	OpWriter     Op = "Writer" // opening a FileWriter
	OpWrite      Op = "Write"  // bytes written through a FileWriter
	OpCommit     Op = "Commit" // a FileWriter's Commit
	OpStat       Op = "Stat"
	OpList       Op = "List"
	OpMove       Op = "Move"
	OpDelete     Op = "Delete"
	OpWalk       Op = "Walk"
)

// Fault is one injected misbehaviour of a FaultDriver.
type Fault struct {
	// Op is the operation it applies to.
	Op Op
	// Path selects the operations it applies to: those whose path (for
	// Move: the source or the destination) contains Path. "" matches all.
	Path string
	// Err is returned instead of doing the operation; nil passes it on
	// (after Delay and Vanish). For OpWrite it is returned once AfterBytes
	// bytes went through the writer.
	Err error
	// AfterBytes (OpWrite only): the bytes a writer accepts before Err.
	AfterBytes int64
	// Delay is waited before the operation (a slow disk or network);
	// the operation's context ends the wait.
	Delay time.Duration
	// Vanish deletes the operation's path (for Move: the source) through
	// the wrapped driver first, as another process or an operator would.
	Vanish bool
	// Count is how many times the fault fires; 0 means every time.
	Count int
}

// ErrNoSpace is a full disk, as the filesystem driver reports it.
var ErrNoSpace error = &os.PathError{Op: "write", Path: "(injected)", Err: syscall.ENOSPC}

// FaultDriver decorates a storage driver with injected faults. With no
// fault injected it passes every operation through unchanged (the
// conformance suite runs on it that way). Safe for concurrent use.
type FaultDriver struct {
	driver.StorageDriver
	mu     sync.Mutex
	faults []*activeFault
	calls  map[Op]int
}

type activeFault struct {
	Fault
	fired int
}

// NewFaultDriver wraps d.
func NewFaultDriver(d driver.StorageDriver) *FaultDriver {
	return &FaultDriver{StorageDriver: d, calls: map[Op]int{}}
}

// Inject adds a fault; the returned function removes it.
func (f *FaultDriver) Inject(ft Fault) (remove func()) {
	a := &activeFault{Fault: ft}
	f.mu.Lock()
	f.faults = append(f.faults, a)
	f.mu.Unlock()
	return func() {
		f.mu.Lock()
		defer f.mu.Unlock()
		for i, x := range f.faults {
			if x == a {
				f.faults = append(f.faults[:i], f.faults[i+1:]...)
				return
			}
		}
	}
}

// Calls counts the operations of kind op seen so far.
func (f *FaultDriver) Calls(op Op) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[op]
}

// find returns the first live fault for op on any of paths; fire counts
// it as fired.
func (f *FaultDriver) find(op Op, fire bool, paths ...string) *Fault {
	f.mu.Lock()
	defer f.mu.Unlock()
	if fire {
		f.calls[op]++
	}
	for _, a := range f.faults {
		if a.Op != op || (a.Count > 0 && a.fired >= a.Count) || !matches(a.Path, paths) {
			continue
		}
		if fire {
			a.fired++
		}
		ft := a.Fault
		return &ft
	}
	return nil
}

func matches(sub string, paths []string) bool {
	for _, p := range paths {
		if strings.Contains(p, sub) {
			return true
		}
	}
	return false
}

// before applies op's fault, if any: delay, vanish, error.
func (f *FaultDriver) before(ctx context.Context, op Op, paths ...string) error {
	ft := f.find(op, true, paths...)
	if ft == nil {
		return nil
	}
	if err := wait(ctx, ft.Delay); err != nil {
		return err
	}
	if ft.Vanish && len(paths) > 0 {
		_ = f.StorageDriver.Delete(ctx, paths[0])
	}
	return ft.Err
}

func wait(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// GetContent applies OpGetContent faults, then reads through.
func (f *FaultDriver) GetContent(ctx context.Context, p string) ([]byte, error) {
	if err := f.before(ctx, OpGetContent, p); err != nil {
		return nil, err
	}
	return f.StorageDriver.GetContent(ctx, p)
}

// PutContent applies OpPutContent faults, then writes through.
func (f *FaultDriver) PutContent(ctx context.Context, p string, content []byte) error {
	if err := f.before(ctx, OpPutContent, p); err != nil {
		return err
	}
	return f.StorageDriver.PutContent(ctx, p, content)
}

// Reader applies OpReader faults, then opens through.
func (f *FaultDriver) Reader(ctx context.Context, p string, offset int64) (io.ReadCloser, error) {
	if err := f.before(ctx, OpReader, p); err != nil {
		return nil, err
	}
	return f.StorageDriver.Reader(ctx, p, offset)
}

// Writer applies OpWriter faults; the FileWriter it returns applies
// OpWrite and OpCommit faults.
func (f *FaultDriver) Writer(ctx context.Context, p string, appendTo bool) (driver.FileWriter, error) {
	if err := f.before(ctx, OpWriter, p); err != nil {
		return nil, err
	}
	w, err := f.StorageDriver.Writer(ctx, p, appendTo)
	if err != nil {
		return nil, err
	}
	return &faultWriter{FileWriter: w, f: f, ctx: ctx, path: p}, nil
}

// Stat applies OpStat faults, then stats through.
func (f *FaultDriver) Stat(ctx context.Context, p string) (driver.FileInfo, error) {
	if err := f.before(ctx, OpStat, p); err != nil {
		return nil, err
	}
	return f.StorageDriver.Stat(ctx, p)
}

// List applies OpList faults, then lists through.
func (f *FaultDriver) List(ctx context.Context, p string) ([]string, error) {
	if err := f.before(ctx, OpList, p); err != nil {
		return nil, err
	}
	return f.StorageDriver.List(ctx, p)
}

// Move applies OpMove faults (matching the source or the destination;
// Vanish deletes the source), then moves through.
func (f *FaultDriver) Move(ctx context.Context, src, dst string) error {
	if err := f.before(ctx, OpMove, src, dst); err != nil {
		return err
	}
	return f.StorageDriver.Move(ctx, src, dst)
}

// Delete applies OpDelete faults, then deletes through.
func (f *FaultDriver) Delete(ctx context.Context, p string) error {
	if err := f.before(ctx, OpDelete, p); err != nil {
		return err
	}
	return f.StorageDriver.Delete(ctx, p)
}

// RedirectURL passes through.
func (f *FaultDriver) RedirectURL(r *http.Request, p string) (string, error) {
	return f.StorageDriver.RedirectURL(r, p)
}

// Walk applies OpWalk faults to the walk's root, then walks through.
func (f *FaultDriver) Walk(ctx context.Context, p string, fn driver.WalkFn, opts ...func(*driver.WalkOptions)) error {
	if err := f.before(ctx, OpWalk, p); err != nil {
		return err
	}
	return f.StorageDriver.Walk(ctx, p, fn, opts...)
}

// faultWriter applies OpWrite and OpCommit faults to a FileWriter.
type faultWriter struct {
	driver.FileWriter
	f    *FaultDriver
	ctx  context.Context // the Writer call's, for delays
	path string
	n    int64
}

func (w *faultWriter) Write(p []byte) (int, error) {
	ft := w.f.find(OpWrite, false, w.path)
	if ft == nil || (ft.Err != nil && w.n+int64(len(p)) <= ft.AfterBytes) {
		n, err := w.FileWriter.Write(p)
		w.n += int64(n)
		return n, err
	}
	w.f.find(OpWrite, true, w.path)
	if err := wait(w.ctx, ft.Delay); err != nil {
		return 0, err
	}
	if ft.Err == nil {
		n, err := w.FileWriter.Write(p)
		w.n += int64(n)
		return n, err
	}
	allowed := max(ft.AfterBytes-w.n, 0)
	n, err := w.FileWriter.Write(p[:allowed])
	w.n += int64(n)
	if err != nil {
		return n, err
	}
	return n, ft.Err
}

func (w *faultWriter) Commit(ctx context.Context) error {
	if err := w.f.before(ctx, OpCommit, w.path); err != nil {
		return err
	}
	return w.FileWriter.Commit(ctx)
}

// FaultFile wraps a staging file (see storage.WithStagingWrapper) with write
// faults: once AfterBytes bytes were written, a write waits Delay, then
// (with Vanish) removes the file from its directory, and fails with Err (or
// passes on when Err is nil). Zero AfterBytes with a Delay slows every
// write.
type FaultFile struct {
	*os.File
	AfterBytes int64
	Err        error
	Delay      time.Duration
	Vanish     bool

	mu      sync.Mutex
	written int64
}

// Write applies the file's faults.
func (f *FaultFile) Write(p []byte) (int, error) { return f.apply(p, f.File.Write) }

// WriteAt applies the file's faults to a positioned write (how a fill
// appends). Without it the embedded *os.File's WriteAt would bypass them.
func (f *FaultFile) WriteAt(p []byte, off int64) (int, error) {
	return f.apply(p, func(b []byte) (int, error) { return f.File.WriteAt(b, off) })
}

func (f *FaultFile) apply(p []byte, write func([]byte) (int, error)) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.written+int64(len(p)) <= f.AfterBytes {
		n, err := write(p)
		f.written += int64(n)
		return n, err
	}
	if f.Delay > 0 {
		time.Sleep(f.Delay)
	}
	if f.Vanish {
		if err := os.Remove(f.Name()); err != nil && !errors.Is(err, os.ErrNotExist) {
			return 0, err
		}
	}
	if f.Err == nil {
		n, err := write(p)
		f.written += int64(n)
		return n, err
	}
	n, err := write(p[:max(f.AfterBytes-f.written, 0)])
	f.written += int64(n)
	if err != nil {
		return n, err
	}
	return n, f.Err
}
