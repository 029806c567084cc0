package storage

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"regexp"
	"sort"
	"time"

	"github.com/opencontainers/go-digest"
)

// pinsRoot holds one JSON document per pin. It sits under Stowage's own
// directory, which a stock registry never looks at.
const pinsRoot = ownRoot + "/pins"

// ErrInvalidPin marks a pin whose name or content cannot be stored.
var ErrInvalidPin = errors.New("storage: invalid pin")

// pinName is the grammar of a pin name: one path component, no dot first.
var pinName = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$`)

// Pin records the images one prefetch list named, so that a size-capped
// eviction can keep them: every manifest and blob digest they need.
type Pin struct {
	// Name is the list's name (e.g. the list file's base name).
	Name string `json:"name"`
	// Updated is when the pin was last written.
	Updated time.Time `json:"updated"`
	// Images are the pinned images.
	Images []PinnedImage `json:"images"`
	// Blobs are every manifest, config and layer digest of the images,
	// sorted and unique.
	Blobs []digest.Digest `json:"blobs"`
}

// PinnedImage is one image of a pin.
type PinnedImage struct {
	// Repository is the cache repository ("docker.io/library/alpine").
	Repository string `json:"repository"`
	// Tag is the tag the list named, "" when it named a digest.
	Tag string `json:"tag,omitempty"`
	// Digest is the resolved top-level manifest (an index or an image).
	Digest digest.Digest `json:"digest"`
}

// Contains reports whether the pin keeps blob d.
func (p Pin) Contains(d digest.Digest) bool {
	i := sort.Search(len(p.Blobs), func(i int) bool { return p.Blobs[i] >= d })
	return i < len(p.Blobs) && p.Blobs[i] == d
}

// PutPin writes (replacing) the pin named p.Name. Blobs are sorted and
// deduplicated first. The write is atomic (write-then-move).
func (s *Store) PutPin(ctx context.Context, p Pin) error {
	if !pinName.MatchString(p.Name) {
		return fmt.Errorf("%w: name %q", ErrInvalidPin, p.Name)
	}
	for _, d := range p.Blobs {
		if err := d.Validate(); err != nil {
			return fmt.Errorf("%w: %s: %w", ErrInvalidPin, p.Name, err)
		}
	}
	blobs := append([]digest.Digest(nil), p.Blobs...)
	sort.Slice(blobs, func(i, j int) bool { return blobs[i] < blobs[j] })
	p.Blobs = compactDigests(blobs)
	if p.Updated.IsZero() {
		p.Updated = time.Now()
	}
	p.Updated = p.Updated.UTC()
	b, err := json.MarshalIndent(p, "", "  ")
	if err != nil {
		return err
	}
	return s.d.PutContent(ctx, path.Join(pinsRoot, p.Name), b)
}

// GetPin reads one pin; ErrNotFound when there is none of that name.
func (s *Store) GetPin(ctx context.Context, name string) (Pin, error) {
	if !pinName.MatchString(name) {
		return Pin{}, fmt.Errorf("%w: name %q", ErrInvalidPin, name)
	}
	b, err := s.d.GetContent(ctx, path.Join(pinsRoot, name))
	if err != nil {
		return Pin{}, mapErr(err)
	}
	return decodePin(name, b)
}

func decodePin(name string, b []byte) (Pin, error) {
	var p Pin
	if err := json.Unmarshal(b, &p); err != nil {
		return Pin{}, fmt.Errorf("%w: %s: %w", ErrInvalidPin, name, err)
	}
	return p, nil
}

// DeletePin removes a pin; deleting a missing pin is not an error.
func (s *Store) DeletePin(ctx context.Context, name string) error {
	if !pinName.MatchString(name) {
		return fmt.Errorf("%w: name %q", ErrInvalidPin, name)
	}
	err := mapErr(s.d.Delete(ctx, path.Join(pinsRoot, name)))
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	return err
}

// Pins reads every pin, sorted by name. A pin that cannot be read is an
// error: an eviction must not run on a partial view.
func (s *Store) Pins(ctx context.Context) ([]Pin, error) {
	recs, err := s.Records(ctx, path.Base(pinsRoot))
	if err != nil {
		return nil, err
	}
	pins := make([]Pin, 0, len(recs))
	for name, b := range recs {
		p, err := decodePin(name, b)
		if err != nil {
			return nil, err
		}
		pins = append(pins, p)
	}
	sort.Slice(pins, func(i, j int) bool { return pins[i].Name < pins[j].Name })
	return pins, nil
}

// PinnedBlobs returns the union of every pin's digests.
func (s *Store) PinnedBlobs(ctx context.Context) (map[digest.Digest]bool, error) {
	pins, err := s.Pins(ctx)
	if err != nil {
		return nil, err
	}
	out := map[digest.Digest]bool{}
	for _, p := range pins {
		for _, d := range p.Blobs {
			out[d] = true
		}
	}
	return out, nil
}

func compactDigests(s []digest.Digest) []digest.Digest {
	out := s[:0]
	for i, d := range s {
		if i == 0 || d != s[i-1] {
			out = append(out, d)
		}
	}
	return out
}
