package storage

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
)

// A tag's fetched-at record (tags/<tag>/stowage_fetched_at) names the
// digest it was fetched as, after the time:
//
//	2026-11-30T00:40:28.123456789Z sha256:<hex>
//
// The record and the current link are two files, and only a new tag on
// the filesystem is written as one step (PutTag). Wherever a crash can
// land between the two writes (a retag, every write on object storage),
// the record written first names the new digest while the current link
// still names the old one: GetTag then sees a time that belongs to another
// digest and reads the tag as stale (TimeUnreadable), so it is revalidated
// rather than served as freshly fetched. A record of an older version (the
// time alone) is read as the current link's.

// tagRecord is a parsed fetched-at record.
type tagRecord struct {
	at time.Time
	// d is the digest the tag was fetched as; "" in an older version's
	// record.
	d digest.Digest
}

func (r tagRecord) encode() []byte {
	s := r.at.UTC().Format(time.RFC3339Nano)
	if r.d != "" {
		s += " " + r.d.String()
	}
	return []byte(s)
}

// belongsTo reports whether the record's time is d's.
func (r tagRecord) belongsTo(d digest.Digest) bool { return r.d == "" || r.d == d }

func parseTagRecord(b []byte) (tagRecord, error) {
	f := strings.Fields(string(b))
	if len(f) == 0 || len(f) > 2 {
		return tagRecord{}, errors.New("want a time and a digest")
	}
	at, err := time.Parse(time.RFC3339Nano, f[0])
	if err != nil {
		return tagRecord{}, err
	}
	r := tagRecord{at: at}
	if len(f) == 2 {
		if r.d, err = digest.Parse(f[1]); err != nil {
			return tagRecord{}, err
		}
	}
	return r, nil
}

// readTagRecord reads a tag's fetched-at record: found false when there is
// none, an error wrapping ErrCorruptRecord when it does not parse.
func (s *Store) readTagRecord(ctx context.Context, repo, tag string) (rec tagRecord, found bool, err error) {
	p := tagFetchedPath(repo, tag)
	b, err := s.d.GetContent(ctx, p)
	if errors.Is(mapErr(err), ErrNotFound) {
		return tagRecord{}, false, nil
	}
	if err != nil {
		return tagRecord{}, false, err
	}
	rec, err = parseTagRecord(b)
	if err != nil {
		return tagRecord{}, true, fmt.Errorf("%w: %s: %w", ErrCorruptRecord, p, err)
	}
	return rec, true, nil
}
