package bundle

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// MaxManifestSize is the largest manifest an import accepts (the 4 MiB cap
// the proxy applies to manifests from an upstream, as distribution does).
// A blob entry above it must be declared, with its exact size, by a
// manifest the import read before it.
const MaxManifestSize = 4 << 20

// ErrTooLarge marks a blob entry larger than the bundle's manifests
// declare for it (or declared by none and over MaxManifestSize), and a
// manifest over MaxManifestSize. Such an entry is refused before it is
// read, and nothing of it is written.
var ErrTooLarge = errors.New("bundle: entry larger than declared")

// descriptors are the references a manifest or an index declares, with
// their sizes (OCI and Docker schema 2 use the same fields).
type descriptors struct {
	Config    *ocispec.Descriptor  `json:"config"`
	Layers    []ocispec.Descriptor `json:"layers"`
	Manifests []ocispec.Descriptor `json:"manifests"`
	Blobs     []ocispec.Descriptor `json:"blobs"`
	Subject   *ocispec.Descriptor  `json:"subject"`
}

// declare records the sizes a verified manifest body declares. A body that
// is not JSON (a layer) declares nothing.
func (im *importer) declare(body []byte) {
	var m descriptors
	if json.Unmarshal(body, &m) != nil {
		return
	}
	all := append(append(append([]ocispec.Descriptor(nil), m.Layers...), m.Manifests...), m.Blobs...)
	for _, p := range []*ocispec.Descriptor{m.Config, m.Subject} {
		if p != nil {
			all = append(all, *p)
		}
	}
	for _, d := range all {
		if d.Digest.Validate() != nil || d.Size <= 0 || len(im.declared) >= maxLinks {
			continue
		}
		if prev, ok := im.declared[d.Digest]; !ok || d.Size > prev {
			im.declared[d.Digest] = d.Size
		}
	}
}

// bound checks a blob entry's size before anything of it is read.
func (im *importer) bound(d digest.Digest, size int64) error {
	want, ok := im.declared[d]
	switch {
	case ok && size != want:
		return fmt.Errorf("%w: blob %s is %d bytes, its manifest declares %d", ErrTooLarge, d, size, want)
	case !ok && size > MaxManifestSize:
		return fmt.Errorf("%w: blob %s is %d bytes, and no manifest before it in the bundle declares it (manifests are capped at %d bytes)",
			ErrTooLarge, d, size, MaxManifestSize)
	}
	return nil
}

// prescan reads the manifests of a seekable bundle first, so that a bundle
// whose layers precede their manifests (written by an older export, or by
// hand) is bounded the same way. It returns to where it started.
func (im *importer) prescan(rs io.ReadSeeker) error {
	start, err := rs.Seek(0, io.SeekCurrent)
	if err != nil {
		return nil // not seekable after all (a pipe as *os.File): one pass
	}
	tr := tar.NewReader(rs) // skips entries it does not read by seeking
	for range maxLinks {
		hdr, err := tr.Next()
		if err != nil {
			break // the import pass reports a broken archive
		}
		name, err := cleanName(hdr.Name)
		m := reBlob.FindStringSubmatch(name)
		if err != nil || m == nil || hdr.Typeflag != tar.TypeReg || hdr.Size > MaxManifestSize {
			continue
		}
		d := digest.NewDigestFromEncoded(digest.SHA256, m[2])
		var buf bytes.Buffer
		if n, err := io.Copy(&buf, io.LimitReader(tr, MaxManifestSize+1)); err != nil || n != hdr.Size || digest.FromBytes(buf.Bytes()) != d {
			continue
		}
		im.declare(buf.Bytes())
	}
	_, err = rs.Seek(start, io.SeekStart)
	return err
}
