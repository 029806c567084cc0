package storage

import (
	"context"
	"errors"
	"fmt"
	"path"
	"regexp"
	"strings"
)

// Records are small documents Stowage keeps for itself beside the cache
// (for example the admin API's prefetch jobs), one per name under
// /stowage/<kind>/, where a stock registry never looks.

var recordKind = regexp.MustCompile(`^[a-z]{1,32}$`)

// ErrInvalidRecord marks a record kind or name outside the allowed forms.
var ErrInvalidRecord = errors.New("storage: invalid record")

// recordName accepts the names records (and pins) may have. A ".tmp" name
// is what the filesystem driver writes first and then renames.
func recordName(name string) bool {
	return pinName.MatchString(name) && !strings.HasSuffix(name, ".tmp")
}

func recordPath(kind, name string) (string, error) {
	if !recordKind.MatchString(kind) || !recordName(name) {
		return "", fmt.Errorf("%w: %q/%q", ErrInvalidRecord, kind, name)
	}
	return path.Join(ownRoot, kind, name), nil
}

// PutRecord writes (replacing) the record kind/name.
func (s *Store) PutRecord(ctx context.Context, kind, name string, data []byte) error {
	p, err := recordPath(kind, name)
	if err != nil {
		return err
	}
	return s.d.PutContent(ctx, p, data)
}

// DeleteRecord removes a record; deleting a missing one is not an error.
func (s *Store) DeleteRecord(ctx context.Context, kind, name string) error {
	p, err := recordPath(kind, name)
	if err != nil {
		return err
	}
	if err := mapErr(s.d.Delete(ctx, p)); err != nil && !errors.Is(err, ErrNotFound) {
		return err
	}
	return nil
}

// Records reads every record of a kind, by name. A record that vanishes
// while it is listed is left out.
func (s *Store) Records(ctx context.Context, kind string) (map[string][]byte, error) {
	if !recordKind.MatchString(kind) {
		return nil, fmt.Errorf("%w: kind %q", ErrInvalidRecord, kind)
	}
	entries, err := s.d.List(ctx, path.Join(ownRoot, kind))
	if errors.Is(mapErr(err), ErrNotFound) {
		return map[string][]byte{}, nil
	}
	if err != nil {
		return nil, err
	}
	out := make(map[string][]byte, len(entries))
	for _, e := range entries {
		name := path.Base(e)
		if !recordName(name) {
			continue // a write in progress (the driver's temporary file), or not ours
		}
		b, err := s.d.GetContent(ctx, e)
		if errors.Is(mapErr(err), ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out[name] = b
	}
	return out, nil
}
