package storage

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
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
// processes sharing one root: every write is a write-then-move.
type Store struct {
	d driver.StorageDriver
	// root is the local directory of a filesystem driver; "" otherwise.
	root string
	// localStaging is where fills stage blobs when the driver is not a
	// local filesystem (the bytes are uploaded through the driver on
	// commit).
	localStaging string
}

// NewFilesystem opens (creating if needed) a cache rooted at dir.
func NewFilesystem(dir string) (*Store, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("storage root %q: %w", dir, err)
	}
	if err := os.MkdirAll(filepath.Join(abs, filepath.FromSlash(stagingDir)), 0o755); err != nil {
		return nil, fmt.Errorf("storage root %q: %w", dir, err)
	}
	d := filesystem.New(filesystem.DriverParameters{RootDirectory: abs, MaxThreads: 100})
	return &Store{d: d, root: abs}, nil
}

// NewInMemory returns a cache that lives in memory (tests). Staged blobs go
// to a temporary directory that Close removes.
func NewInMemory() (*Store, error) {
	return New(inmemory.New())
}

// New wraps any distribution storage driver (S3, GCS, Azure, ...). Fills
// stage blobs in a local temporary directory and upload them on commit.
func New(d driver.StorageDriver) (*Store, error) {
	if d == nil {
		return nil, errors.New("storage: nil driver")
	}
	dir, err := os.MkdirTemp("", "stowage-staging-")
	if err != nil {
		return nil, fmt.Errorf("storage: staging directory: %w", err)
	}
	return &Store{d: d, localStaging: dir}, nil
}

// Close releases local resources (the staging directory of a non-local
// driver).
func (s *Store) Close() error {
	if s.localStaging != "" {
		return os.RemoveAll(s.localStaging)
	}
	return nil
}

// Root returns the local directory of a filesystem store, or "".
func (s *Store) Root() string { return s.root }

// Driver exposes the underlying storage driver (maintenance tools).
func (s *Store) Driver() driver.StorageDriver { return s.d }

// CleanStaging removes leftovers of fills interrupted by a crash. Call it at
// start-up, before serving.
func (s *Store) CleanStaging(ctx context.Context) error {
	if s.root == "" {
		return nil
	}
	dir := filepath.Join(s.root, filepath.FromSlash(stagingDir))
	entries, err := os.ReadDir(dir)
	if err != nil {
		if os.IsNotExist(err) {
			return nil
		}
		return fmt.Errorf("clean staging: %w", err)
	}
	var errs []error
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

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

// Staging is a local file a fill writes a blob into before Commit.
type Staging struct {
	// File is open for reading and writing; readers use ReadAt.
	File *os.File
	// driverPath is the file's path inside a filesystem driver, "" when it
	// lives outside the driver.
	driverPath string
}

// NewStaging creates an empty staging file for a blob fill.
func (s *Store) NewStaging(d digest.Digest) (*Staging, error) {
	var rnd [8]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return nil, err
	}
	name := d.Encoded() + "." + hex.EncodeToString(rnd[:])
	if s.root != "" {
		dp := stagingDir + "/" + name
		f, err := os.OpenFile(filepath.Join(s.root, filepath.FromSlash(dp)), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
		if err != nil {
			return nil, fmt.Errorf("storage: staging: %w", err)
		}
		return &Staging{File: f, driverPath: dp}, nil
	}
	f, err := os.OpenFile(filepath.Join(s.localStaging, name), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return nil, fmt.Errorf("storage: staging: %w", err)
	}
	return &Staging{File: f}, nil
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
// on the filesystem driver, an upload through the driver otherwise. The
// caller has checked size and digest and synced the file.
func (s *Store) CommitBlob(ctx context.Context, d digest.Digest, st *Staging) error {
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
func (s *Store) LinkBlob(ctx context.Context, repo string, d digest.Digest) error {
	return s.writeLink(ctx, layerLinkPath(repo, d), d)
}

// BlobLinked reports whether repo references blob d.
func (s *Store) BlobLinked(ctx context.Context, repo string, d digest.Digest) (bool, error) {
	return s.exists(ctx, layerLinkPath(repo, d))
}
