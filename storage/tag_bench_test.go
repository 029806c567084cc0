package storage_test

import (
	"strconv"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

// BenchmarkPutTag: writing a new tag (a new directory) and moving an
// existing one, on the filesystem, with every write synced.
func BenchmarkPutTag(b *testing.B) {
	d1, d2 := digest.FromString("one"), digest.FromString("two")
	const repo = "docker.io/library/bench"
	b.Run("new", func(b *testing.B) {
		s := newFS(b, b.TempDir())
		i := 0
		for b.Loop() {
			if err := s.PutTag(b.Context(), repo, "t"+strconv.Itoa(i), d1, time.Now()); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
	b.Run("retag", func(b *testing.B) {
		s := newFS(b, b.TempDir())
		i := 0
		for b.Loop() {
			d := d1
			if i%2 == 1 {
				d = d2
			}
			if err := s.PutTag(b.Context(), repo, "moving", d, time.Now()); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
}
