package storage

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	driver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/distribution/distribution/v3/registry/storage/driver/filesystem"
	"github.com/distribution/distribution/v3/registry/storage/driver/inmemory"
	"github.com/opencontainers/go-digest"
)

// ErrNotFound means the cache does not hold the thing asked for. Every other
// error from a Store is a real storage failure and must not be treated as a
// miss.
var ErrNotFound = errors.New("storage: not found")

// Store is the cache on a distribution storage driver, in the distribution
// registry's on-disk layout. It is safe for concurrent use, also by several
// processes sharing one root (replicas on a shared volume, "proxy import"
// or "proxy prefetch" beside a server):
//
//   - every write is a write-then-move, so readers see an object whole or
//     not at all;
//   - on the filesystem driver each Store owns a staging directory,
//     stowage/staging/<instance>/, held by a lock (flock) on
//     stowage/staging/<instance>.lock for the Store's lifetime. Blob fills
//     and metadata writes go through it, and CleanStaging removes only the
//     directories of owners that are gone.
//
// Close releases the lock and removes the Store's own staging directory.
type Store struct {
	d driver.StorageDriver
	// root is the local directory of a filesystem driver; "" otherwise.
	root string
	// staging is this Store's own staging directory: inside the root on the
	// filesystem driver, a local temporary directory otherwise (its bytes
	// are uploaded through the driver on commit).
	staging string
	// stagingDP is staging's driver path on the filesystem driver, "" when
	// staging lies outside the driver.
	stagingDP string
	// lock is the held flock of a filesystem Store's staging directory.
	lock *stagingLock
	// wrapStaging, when set, wraps staging files (fault injection).
	wrapStaging func(*os.File) StagingFile
	// redirect makes BlobURL presign URLs (WithRedirect).
	redirect bool
	// guard keeps links and removals of one blob apart (blobguard.go).
	guard blobGuard

	// relock guards lock.f while restoreStaging replaces it.
	relock sync.Mutex

	closeOnce sync.Once
	closeErr  error
}

// Option configures a Store.
type Option func(*options)

type options struct {
	wrapDriver  func(driver.StorageDriver) driver.StorageDriver
	wrapStaging func(*os.File) StagingFile
	redirect    bool
}

// WithDriverWrapper decorates the filesystem driver NewFilesystem builds
// (for example with a fault-injecting driver in tests). The Store still
// treats the root as local: blobs are staged inside it and committed by a
// move. New ignores it: wrap the driver before passing it.
func WithDriverWrapper(wrap func(driver.StorageDriver) driver.StorageDriver) Option {
	return func(o *options) { o.wrapDriver = wrap }
}

// WithStagingWrapper makes Staging.IO return wrap(File) instead of File, so
// tests can fail or slow down a fill's writes to its staging file.
func WithStagingWrapper(wrap func(*os.File) StagingFile) Option {
	return func(o *options) { o.wrapStaging = wrap }
}

// NewFilesystem opens (creating if needed) a cache rooted at dir and takes
// this Store's own staging directory in it.
func NewFilesystem(dir string, opts ...Option) (*Store, error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("storage root %q: %w", dir, err)
	}
	stagingRoot := filepath.Join(abs, filepath.FromSlash(stagingDir))
	if err := os.MkdirAll(stagingRoot, 0o755); err != nil {
		return nil, fmt.Errorf("storage root %q: %w", dir, err)
	}
	lock, err := acquireStaging(stagingRoot)
	if err != nil {
		return nil, fmt.Errorf("storage root %q: %w", dir, err)
	}
	var d driver.StorageDriver = filesystem.New(filesystem.DriverParameters{RootDirectory: abs, MaxThreads: 100})
	if o.wrapDriver != nil {
		d = o.wrapDriver(d)
	}
	dp := stagingDir + "/" + lock.id
	return &Store{
		d:           &localDriver{StorageDriver: d, root: abs, tmpDir: dp},
		root:        abs,
		staging:     filepath.Join(stagingRoot, lock.id),
		stagingDP:   dp,
		lock:        lock,
		wrapStaging: o.wrapStaging,
	}, nil
}

// NewInMemory returns a cache that lives in memory (tests). Staged blobs go
// to a temporary directory that Close removes.
func NewInMemory(opts ...Option) (*Store, error) {
	return New(inmemory.New(), opts...)
}

// New wraps any distribution storage driver (S3, GCS, Azure, ...). Fills
// stage blobs in a local temporary directory of this process and upload
// them on commit.
func New(d driver.StorageDriver, opts ...Option) (*Store, error) {
	if d == nil {
		return nil, errors.New("storage: nil driver")
	}
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	dir, err := os.MkdirTemp("", "stowage-staging-")
	if err != nil {
		return nil, fmt.Errorf("storage: staging directory: %w", err)
	}
	return &Store{d: d, staging: dir, wrapStaging: o.wrapStaging, redirect: o.redirect}, nil
}

// Close removes this Store's staging directory (with whatever a fill left
// in it) and releases its lock. Call it after every fill has ended.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.relock.Lock()
		defer s.relock.Unlock()
		err := os.RemoveAll(s.staging)
		if s.lock != nil {
			err = errors.Join(err, s.lock.release())
		}
		s.closeErr = err
	})
	return s.closeErr
}

// Root returns the local directory of a filesystem store, or "".
func (s *Store) Root() string { return s.root }

// mapErr turns the driver's not-found into ErrNotFound and keeps every other
// error as a failure.
func mapErr(err error) error {
	if err == nil {
		return nil
	}
	var nf driver.PathNotFoundError
	if errors.As(err, &nf) {
		return fmt.Errorf("%w: %s", ErrNotFound, nf.Path)
	}
	return err
}

func (s *Store) readLink(ctx context.Context, p string) (digest.Digest, error) {
	b, err := s.d.GetContent(ctx, p)
	if err != nil {
		return "", mapErr(err)
	}
	d, err := digest.Parse(strings.TrimSpace(string(b)))
	if err != nil {
		return "", fmt.Errorf("storage: corrupt link %s: %w", p, err)
	}
	return d, nil
}

func (s *Store) writeLink(ctx context.Context, p string, d digest.Digest) error {
	return s.d.PutContent(ctx, p, []byte(d.String()))
}

func (s *Store) exists(ctx context.Context, p string) (bool, error) {
	_, err := s.d.Stat(ctx, p)
	if err == nil {
		return true, nil
	}
	if errors.Is(mapErr(err), ErrNotFound) {
		return false, nil
	}
	return false, err
}

// StagingFile is what a fill does with its staging file. *os.File
// satisfies it; Staging.IO returns it, wrapped when the Store was opened
// WithStagingWrapper.
type StagingFile interface {
	io.Writer
	io.WriterAt // a fill appends with WriteAt
	io.ReaderAt
	io.Seeker
	Sync() error
	Truncate(size int64) error
	Close() error
	Name() string
}

// Staging is a local file a fill writes a blob into before Commit.
type Staging struct {
	// File is open for reading and writing; readers use ReadAt.
	File *os.File
	// io is File, or File behind the Store's staging wrapper.
	io StagingFile
	// driverPath is the file's path inside a filesystem driver, "" when it
	// lives outside the driver.
	driverPath string
}

// IO returns the staging file as a fill should write it: File itself, or
// File behind the wrapper given WithStagingWrapper (fault injection).
func (st *Staging) IO() StagingFile { return st.io }

// NewStaging creates an empty staging file for a blob fill in this Store's
// own staging directory.
func (s *Store) NewStaging(d digest.Digest) (*Staging, error) {
	if s.lock != nil {
		// A staging directory whose lock file went is any cleanup's to
		// remove (a metadata write may have re-created the directory
		// alone): check it for every fill (three stat calls).
		if err := s.restoreStaging(); err != nil {
			return nil, fmt.Errorf("storage: staging: %w", err)
		}
	}
	name := d.Encoded() + "." + randomHex(8)
	f, err := os.OpenFile(filepath.Join(s.staging, name), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if errors.Is(err, fs.ErrNotExist) {
		// Removed under the running process: take it back.
		if rerr := s.restoreStaging(); rerr != nil {
			return nil, fmt.Errorf("storage: staging: %w", errors.Join(err, rerr))
		}
		f, err = os.OpenFile(filepath.Join(s.staging, name), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	}
	if err != nil {
		return nil, fmt.Errorf("storage: staging: %w", err)
	}
	st := &Staging{File: f, io: f}
	if s.stagingDP != "" {
		st.driverPath = s.stagingDP + "/" + name
	}
	if s.wrapStaging != nil {
		st.io = s.wrapStaging(f)
	}
	return st, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
	return hex.EncodeToString(b)
}

// Discard removes the staging file. Open readers keep their descriptor.
func (st *Staging) Discard() error {
	err := os.Remove(st.File.Name())
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}

// CommitBlob makes a staged, verified blob visible under its digest: a rename
// on the filesystem driver (durable: the directory is synced before it
// returns), an upload through the driver otherwise. The caller has checked
// size and digest and synced the file.
func (s *Store) CommitBlob(ctx context.Context, d digest.Digest, st *Staging) error {
	defer s.guard.acquire(d, false)()
	dst := blobDataPath(d)
	if st.driverPath != "" {
		if err := s.d.Move(ctx, st.driverPath, dst); err != nil {
			return fmt.Errorf("storage: commit %s: %w", d, err)
		}
		return nil
	}
	if _, err := st.File.Seek(0, io.SeekStart); err != nil {
		return err
	}
	w, err := s.d.Writer(ctx, dst, false)
	if err != nil {
		return fmt.Errorf("storage: commit %s: %w", d, err)
	}
	if _, err := io.Copy(w, st.File); err != nil {
		return errors.Join(fmt.Errorf("storage: commit %s: %w", d, err), w.Cancel(ctx), w.Close())
	}
	if err := w.Commit(ctx); err != nil {
		return errors.Join(fmt.Errorf("storage: commit %s: %w", d, err), w.Close())
	}
	if err := w.Close(); err != nil {
		return err
	}
	return st.Discard()
}

// BlobInfo describes a committed blob.
type BlobInfo struct {
	Size    int64
	ModTime time.Time
}

// StatBlob reports whether a blob is in the cache (in any repository).
func (s *Store) StatBlob(ctx context.Context, d digest.Digest) (BlobInfo, error) {
	fi, err := s.d.Stat(ctx, blobDataPath(d))
	if err != nil {
		return BlobInfo{}, mapErr(err)
	}
	if fi.IsDir() {
		return BlobInfo{}, fmt.Errorf("%w: %s: a directory where the blob's data belongs", ErrNotFound, d)
	}
	return BlobInfo{Size: fi.Size(), ModTime: fi.ModTime()}, nil
}

// OpenBlob opens a committed blob for http.ServeContent. On the filesystem
// driver the result is the *os.File itself, so the kernel's sendfile is used.
func (s *Store) OpenBlob(ctx context.Context, d digest.Digest) (io.ReadSeekCloser, BlobInfo, error) {
	if s.root != "" {
		f, err := os.Open(filepath.Join(s.root, filepath.FromSlash(blobDataPath(d))))
		if err != nil {
			if os.IsNotExist(err) {
				return nil, BlobInfo{}, fmt.Errorf("%w: %s", ErrNotFound, d)
			}
			return nil, BlobInfo{}, err
		}
		fi, err := f.Stat()
		if err != nil {
			return nil, BlobInfo{}, errors.Join(err, f.Close())
		}
		if !fi.Mode().IsRegular() {
			return nil, BlobInfo{}, errors.Join(fmt.Errorf("%w: %s: not a regular file where the blob's data belongs", ErrNotFound, d), f.Close())
		}
		return f, BlobInfo{Size: fi.Size(), ModTime: fi.ModTime()}, nil
	}
	info, err := s.StatBlob(ctx, d)
	if err != nil {
		return nil, BlobInfo{}, err
	}
	return &driverReadSeeker{ctx: ctx, d: s.d, path: blobDataPath(d), size: info.Size}, info, nil
}

// LinkBlob records that repo references blob d (the registry's _layers
// link), which a stock registry needs to serve it under that repository.
// The blob must be in the cache: a link to a missing blob (one removed
// meanwhile) is not written, and the error wraps ErrNotFound. A removal of
// the same blob by this Store runs wholly before or after it.
func (s *Store) LinkBlob(ctx context.Context, repo string, d digest.Digest) error {
	defer s.guard.acquire(d, false)()
	if _, err := s.StatBlob(ctx, d); err != nil {
		return fmt.Errorf("storage: link %s into %s: %w", d, repo, err)
	}
	s.guard.linked(repo)
	return s.writeLink(ctx, layerLinkPath(repo, d), d)
}

// BlobLinked reports whether repo references blob d.
func (s *Store) BlobLinked(ctx context.Context, repo string, d digest.Digest) (bool, error) {
	return s.exists(ctx, layerLinkPath(repo, d))
}
