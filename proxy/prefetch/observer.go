package prefetch

import "sync/atomic"

// Observer follows a run as it goes (progress bars, job counters). Calls
// come from many goroutines at once; implementations must be safe for
// concurrent use and fast.
type Observer interface {
	// Planned is called once with the number of images to fetch.
	Planned(images int)
	// ImageStarted is called when an image's manifest is being resolved.
	ImageStarted(ref string)
	// BlobsPlanned adds bytes an image needs (its blobs' sizes).
	BlobsPlanned(ref string, bytes int64)
	// BlobProgress reports bytes of one of an image's blobs arriving from
	// the upstream while it downloads.
	BlobProgress(ref string, bytes int64)
	// BlobDone is called when one of an image's blobs is in the cache, with
	// the bytes of it not yet reported by BlobProgress.
	BlobDone(ref string, bytes int64, fromUpstream bool)
	// ImageDone is called with an image's outcome.
	ImageDone(r ImageReport)
}

// NopObserver ignores every event.
type NopObserver struct{}

func (NopObserver) Planned(int)                  {}
func (NopObserver) ImageStarted(string)          {}
func (NopObserver) BlobsPlanned(string, int64)   {}
func (NopObserver) BlobProgress(string, int64)   {}
func (NopObserver) BlobDone(string, int64, bool) {}
func (NopObserver) ImageDone(ImageReport)        {}

// Progress is an Observer that keeps counters, for polling.
type Progress struct {
	images, imagesDone, imagesFailed atomic.Int64
	bytesPlanned, bytesDone          atomic.Int64
	bytesUpstream                    atomic.Int64
	per                              imageStates // per image (imageprogress.go)
}

// ProgressSnapshot is a copy of a Progress's counters.
type ProgressSnapshot struct {
	Images        int64 `json:"images"`
	ImagesDone    int64 `json:"images_done"`
	ImagesFailed  int64 `json:"images_failed"`
	BytesPlanned  int64 `json:"bytes_planned"`
	BytesDone     int64 `json:"bytes_done"`
	BytesUpstream int64 `json:"bytes_upstream"`
	// PerImage is where each image is (Jobs.Get shows it while the job
	// runs), in the order planned, at most MaxImageStates of them.
	PerImage        []ImageProgress `json:"per_image,omitempty"`
	ImagesTruncated bool            `json:"images_truncated,omitempty"`
}

// Snapshot returns the counters now, without the per-image list.
func (p *Progress) Snapshot() ProgressSnapshot {
	return ProgressSnapshot{
		Images: p.images.Load(), ImagesDone: p.imagesDone.Load(), ImagesFailed: p.imagesFailed.Load(),
		BytesPlanned: p.bytesPlanned.Load(), BytesDone: p.bytesDone.Load(), BytesUpstream: p.bytesUpstream.Load(),
	}
}

// SnapshotImages returns the counters and where each image is.
func (p *Progress) SnapshotImages() ProgressSnapshot {
	s := p.Snapshot()
	s.PerImage, s.ImagesTruncated = p.per.snapshot()
	return s
}

// Planned implements Observer.
func (p *Progress) Planned(n int) { p.images.Store(int64(n)) }

// ImageStarted implements Observer.
func (p *Progress) ImageStarted(ref string) {
	p.per.update(ref, ImageRunning, func(ip *ImageProgress) { ip.State = ImageRunning })
}

// BlobsPlanned implements Observer.
func (p *Progress) BlobsPlanned(ref string, n int64) {
	p.bytesPlanned.Add(n)
	p.per.update(ref, ImageRunning, func(ip *ImageProgress) { ip.BytesPlanned += n })
}

// BlobProgress implements Observer: streamed bytes come from the upstream.
func (p *Progress) BlobProgress(ref string, n int64) {
	p.bytesDone.Add(n)
	p.bytesUpstream.Add(n)
	p.per.update(ref, ImageRunning, func(ip *ImageProgress) { ip.BytesDone += n; ip.BytesUpstream += n })
}

// BlobDone implements Observer.
func (p *Progress) BlobDone(ref string, n int64, up bool) {
	p.bytesDone.Add(n)
	if up {
		p.bytesUpstream.Add(n)
	}
	p.per.update(ref, ImageRunning, func(ip *ImageProgress) {
		ip.BytesDone += n
		if up {
			ip.BytesUpstream += n
		}
	})
}

// ImageDone implements Observer.
func (p *Progress) ImageDone(r ImageReport) {
	p.imagesDone.Add(1)
	if r.Error != "" {
		p.imagesFailed.Add(1)
	}
	p.per.update(r.Ref, ImageDone, func(ip *ImageProgress) {
		ip.State, ip.Error = ImageDone, r.Error
		if r.Error != "" {
			ip.State = ImageFailed
		}
	})
}

// Observers fans events out to several observers.
type Observers []Observer

func (o Observers) Planned(n int) {
	for _, x := range o {
		x.Planned(n)
	}
}

func (o Observers) ImageStarted(ref string) {
	for _, x := range o {
		x.ImageStarted(ref)
	}
}

func (o Observers) BlobsPlanned(ref string, n int64) {
	for _, x := range o {
		x.BlobsPlanned(ref, n)
	}
}

func (o Observers) BlobProgress(ref string, n int64) {
	for _, x := range o {
		x.BlobProgress(ref, n)
	}
}

func (o Observers) BlobDone(ref string, n int64, up bool) {
	for _, x := range o {
		x.BlobDone(ref, n, up)
	}
}

func (o Observers) ImageDone(r ImageReport) {
	for _, x := range o {
		x.ImageDone(r)
	}
}
