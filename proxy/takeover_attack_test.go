package proxy_test

import (
	"bytes"
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/stowage/stowage/proxy/internal/testenv"
)

// plantOrphan leaves content as the staging file of d where a process
// that died leaves it: <root>/stowage/staging/<id>/<hex>.<suffix> beside
// its lock file <id>.lock, which no one holds any more.
func plantOrphan(t *testing.T, root string, d digest.Digest, content []byte) {
	t.Helper()
	dir := filepath.Join(root, "stowage", "staging", "4242-deadbeefdeadbeef")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dir+".lock", nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, d.Encoded()+".0123456789abcdef"), content, 0o644); err != nil {
		t.Fatal(err)
	}
}

// ignoreRange serves blob GETs whole (200 from byte 0), whatever Range
// asks for.
func ignoreRange(w http.ResponseWriter, r *http.Request, next http.Handler) {
	r.Header.Del("Range")
	next.ServeHTTP(w, r)
}

// TestAttackAdoptedOrphans: a fill that adopts a dead owner's staged bytes
// never completes a response with bytes that are not the blob's, whatever
// those staged bytes are (a wrong middle, longer than the blob, the whole
// length but wrong) and whatever the upstream does with the resume (416,
// Range ignored, a lying 206, different bytes each time). Where the
// upstream is honest the blob ends committed and verified, in at most two
// upstream downloads.
func TestAttackAdoptedOrphans(t *testing.T) {
	t.Parallel()
	const size = 1 << 20
	flip := func(b []byte, at int) []byte {
		b = bytes.Clone(b)
		b[at] ^= 0xff
		return b
	}
	cases := []struct {
		name   string
		orphan func(blob []byte) []byte
		fault  testenv.Fault
		honest bool // the upstream serves the blob: it must end committed
	}{
		{"wrong middle", func(b []byte) []byte { return flip(b[:size/2], size/4) }, nil, true},
		{"longer than the blob", func(b []byte) []byte { return append(bytes.Clone(b), "trailing junk"...) }, nil, true},
		{"whole length, wrong", func(b []byte) []byte { return flip(b, size-1) }, nil, true},
		{"right prefix, Range ignored", func(b []byte) []byte { return bytes.Clone(b[:size/2]) }, ignoreRange, true},
		{"wrong middle, Range ignored", func(b []byte) []byte { return flip(b[:size/2], size/4) }, ignoreRange, true},
		{"longer than the blob, Range ignored", func(b []byte) []byte { return append(bytes.Clone(b), "trailing junk"...) }, ignoreRange, true},
		{"right prefix, lying 206", func(b []byte) []byte { return bytes.Clone(b[:size/2]) }, testenv.RangeFromZero(), true},
		{"right prefix, bytes differ each time", func(b []byte) []byte { return bytes.Clone(b[:size/2]) }, testenv.MutateBlobs(1000), false},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
			defer cancel()
			root := t.TempDir()
			e := newEnv(t, envOptions{root: root})
			d, blob := e.seedRead("library/adopt:v1", size, uint64(150+i))
			plantOrphan(t, root, d, tc.orphan(blob))
			if tc.fault != nil {
				e.up.SetFault(tc.fault)
			}
			path := "/v2/library/adopt/blobs/" + d.String()
			tail := "bytes=" + strconv.Itoa(size-100) + "-"
			mid := "bytes=1000-" + strconv.Itoa(size/2)
			reqs := []string{"", "", tail, mid}
			answers := make([]answer, len(reqs))
			var wg sync.WaitGroup
			for j, rng := range reqs {
				wg.Go(func() {
					var h http.Header
					if rng != "" {
						h = http.Header{"Range": {rng}}
					}
					answers[j] = e.fetch(ctx, http.MethodGet, path, h)
				})
			}
			wg.Wait()
			completed := 0
			for j, a := range answers {
				neverWrong(t, "client "+strconv.Itoa(j)+" "+reqs[j], a, blob, reqs[j])
				if a.complete() {
					completed++
				}
			}
			gets := e.up.Count(testenv.BlobGet)
			_, statErr := e.store.StatBlob(ctx, d)
			t.Logf("%d of %d clients complete; upstream blob GETs %d; committed: %v", completed, len(reqs), gets, statErr == nil)
			if statErr == nil {
				rs, _, err := e.store.OpenBlob(ctx, d)
				if err != nil {
					t.Fatal(err)
				}
				var got bytes.Buffer
				_, err = got.ReadFrom(rs)
				_ = rs.Close()
				if err != nil || !bytes.Equal(got.Bytes(), blob) {
					t.Fatalf("committed blob is not the blob (%d bytes, %v)", got.Len(), err)
				}
			}
			if !tc.honest {
				if statErr == nil {
					t.Errorf("committed a blob from an upstream whose bytes differ on each GET")
				}
				return
			}
			if statErr != nil {
				t.Fatalf("honest upstream: blob not committed: %v", statErr)
			}
			if gets > 2 {
				t.Errorf("honest upstream: %d blob GETs, want at most 2 (the resume and one from zero)", gets)
			}
			if a := e.fetch(ctx, http.MethodGet, path, nil); !a.complete() || !bytes.Equal(a.body, blob) {
				t.Errorf("pull after the fill: %s", a)
			}
		})
	}
}
