package prefetch

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/opencontainers/go-digest"
)

// Report is the outcome of one run.
type Report struct {
	// Started is when the run began.
	Started time.Time `json:"started"`
	// Duration is the wall time of the run.
	Duration time.Duration `json:"duration_ns"`
	// Platforms is the filter the run applied (empty: all).
	Platforms []string `json:"platforms,omitempty"`
	// Images has one entry per unique image, in list order.
	Images []ImageReport `json:"images"`
	// Problems are list entries that could not be used and rules that could
	// not be expanded; they count as failures.
	Problems []string `json:"problems,omitempty"`
	// Totals sums the images.
	Totals Totals `json:"totals"`
}

// ImageReport is the outcome for one image.
type ImageReport struct {
	// Ref is the canonical reference as listed.
	Ref string `json:"ref"`
	// Repository is the cache repository ("docker.io/library/alpine").
	Repository string `json:"repository,omitempty"`
	// Tag is the listed tag, "" when only a digest was listed.
	Tag string `json:"tag,omitempty"`
	// Digest is the resolved top-level manifest.
	Digest digest.Digest `json:"digest,omitempty"`
	// MediaType is the top-level manifest's media type.
	MediaType string `json:"media_type,omitempty"`
	// Platforms are the platforms fetched ("linux/amd64"); empty for an
	// image whose platform the engine did not learn.
	Platforms []string `json:"platforms,omitempty"`
	// Manifests are every manifest digest stored (index and children).
	Manifests []digest.Digest `json:"manifests,omitempty"`
	// Blobs are every config and layer digest stored.
	Blobs []digest.Digest `json:"blobs,omitempty"`
	// Skipped are foreign or non-distributable layers not fetched.
	Skipped []digest.Digest `json:"skipped,omitempty"`
	// Bytes is the size of the image's blobs (config and layers).
	Bytes int64 `json:"bytes"`
	// UpstreamBytes were downloaded for this image by this run; a blob
	// shared with an earlier image of the run counts as cached.
	UpstreamBytes int64 `json:"upstream_bytes"`
	// CachedBytes were already in the cache.
	CachedBytes int64 `json:"cached_bytes"`
	// Duration is the image's wall time, retries included.
	Duration time.Duration `json:"duration_ns"`
	// Attempts is how often the image was tried.
	Attempts int `json:"attempts"`
	// Error is why the image failed; "" on success.
	Error string `json:"error,omitempty"`

	sizes map[digest.Digest]int64 // blob sizes, for unique totals
	pins  []string                // pins naming the image
}

// Totals sums a run.
type Totals struct {
	Images        int   `json:"images"`
	Failed        int   `json:"failed"`
	Problems      int   `json:"problems"`
	Blobs         int   `json:"blobs"`
	Bytes         int64 `json:"bytes"`
	UpstreamBytes int64 `json:"upstream_bytes"`
	CachedBytes   int64 `json:"cached_bytes"`
}

// OK reports whether every image succeeded and no list entry was bad.
func (r *Report) OK() bool { return r.Totals.Failed == 0 && len(r.Problems) == 0 }

// finish computes the totals; unique blobs are counted once.
func (r *Report) finish(d time.Duration) {
	r.Duration = d
	t := Totals{Images: len(r.Images), Problems: len(r.Problems)}
	seen := map[digest.Digest]bool{}
	for _, im := range r.Images {
		if im.Error != "" {
			t.Failed++
		}
		t.UpstreamBytes += im.UpstreamBytes
		for _, b := range im.Blobs {
			seen[b] = true
		}
	}
	t.Blobs = len(seen)
	// Bytes is the unique size: per-image Bytes double-count shared blobs.
	sizes := map[digest.Digest]int64{}
	for _, im := range r.Images {
		for d, s := range im.sizes {
			sizes[d] = s
		}
	}
	for _, s := range sizes {
		t.Bytes += s
	}
	t.CachedBytes = t.Bytes - t.UpstreamBytes
	r.Totals = t
}

// WriteText writes a human summary: one line per image, then totals and
// problems.
func (r *Report) WriteText(w io.Writer) error {
	// The tabwriter buffers until Flush, which reports write errors.
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	_, _ = fmt.Fprintln(tw, "IMAGE\tDIGEST\tPLATFORMS\tSIZE\tUPSTREAM\tTIME\tRESULT")
	for _, im := range r.Images {
		res := "ok"
		if im.Error != "" {
			res = "FAILED: " + im.Error
		}
		_, _ = fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", im.Ref, short(im.Digest), strings.Join(im.Platforms, ","),
			HumanBytes(im.Bytes), HumanBytes(im.UpstreamBytes), im.Duration.Round(time.Millisecond), res)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, p := range r.Problems {
		_, _ = fmt.Fprintln(w, "problem:", p) // a failing writer fails the last write too
	}
	t := r.Totals
	_, err := fmt.Fprintf(w, "%d images (%d failed), %d blobs, %s total, %s from upstream, %s cached, %d problems, in %s\n",
		t.Images, t.Failed, t.Blobs, HumanBytes(t.Bytes), HumanBytes(t.UpstreamBytes), HumanBytes(t.CachedBytes),
		t.Problems, r.Duration.Round(time.Millisecond))
	return err
}

func short(d digest.Digest) string {
	if len(d) > 19 {
		return string(d[:19])
	}
	return string(d)
}

// HumanBytes formats a byte count with binary units ("1.5 MiB").
func HumanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
