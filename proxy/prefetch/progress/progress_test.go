package progress_test

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/stowage/stowage/proxy/prefetch"
	"github.com/stowage/stowage/proxy/prefetch/progress"
)

// TestLinesWhenNotATerminal: a buffer is not a terminal, so New prints
// plain lines, and Stop prints the final counts.
func TestLinesWhenNotATerminal(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	d := progress.New(t.Context(), &buf, time.Hour)
	d.Planned(2)
	d.ImageStarted("a")
	d.BlobsPlanned("a", 2048)
	d.BlobDone("a", 2048, true)
	d.ImageDone(prefetch.ImageReport{Ref: "a"})
	d.ImageDone(prefetch.ImageReport{Ref: "b", Error: "boom"})
	d.Stop()
	d.Stop() // idempotent
	got := buf.String()
	if strings.Count(got, "\n") != 1 || !strings.Contains(got, "2/2 images (1 failed), 2.0 KiB / 2.0 KiB") {
		t.Fatalf("lines: %q", got)
	}
}

// TestBars draws to a buffer without a terminal and stops cleanly.
func TestBars(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	b := progress.NewBars(t.Context(), &buf)
	b.ImageStarted("docker.io/library/alpine:3.20")
	b.BlobsPlanned("docker.io/library/alpine:3.20", 4096)
	b.BlobDone("docker.io/library/alpine:3.20", 4096, true)
	b.ImageDone(prefetch.ImageReport{Ref: "docker.io/library/alpine:3.20"})
	b.ImageStarted("x")
	b.Stop()
	if !strings.Contains(buf.String(), "total") {
		t.Fatalf("bars: %q", buf.String())
	}
}
