package storage_test

import (
	"strconv"
	"testing"
)

// BenchmarkLinkBlob measures one _layers link of a committed blob on the
// filesystem (a new repository each time: a whole new link directory).
func BenchmarkLinkBlob(b *testing.B) {
	s := newFS(b, b.TempDir())
	d := commitBlob(b, s, "a layer linked into many repositories")
	i := 0
	for b.Loop() {
		if err := s.LinkBlob(b.Context(), "docker.io/bench/r"+strconv.Itoa(i), d); err != nil {
			b.Fatal(err)
		}
		i++
	}
}
