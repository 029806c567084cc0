// Package progress shows a prefetch run as it goes: progress bars on a
// terminal (github.com/vbauerster/mpb/v8), plain periodic lines otherwise.
package progress

import (
	"context"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"
	"golang.org/x/term"

	"github.com/stowage/stowage/proxy/prefetch"
)

// Display is a prefetch.Observer that draws; Stop ends drawing and waits.
type Display interface {
	prefetch.Observer
	Stop()
}

// IsTerminal reports whether w is a terminal.
func IsTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// New returns bars when w is a terminal and periodic lines (every
// interval) otherwise.
func New(ctx context.Context, w io.Writer, interval time.Duration) Display {
	if IsTerminal(w) {
		return NewBars(ctx, w)
	}
	return NewLines(w, interval)
}

// Bars draws a total bar (bytes, rate, ETA) and one bar per image in
// progress.
type Bars struct {
	p     *mpb.Progress
	total *mpb.Bar
	mu    sync.Mutex
	bars  map[string]*mpb.Bar
	sum   int64
}

// NewBars starts drawing to w.
func NewBars(ctx context.Context, w io.Writer) *Bars {
	p := mpb.NewWithContext(ctx, mpb.WithOutput(w), mpb.WithWidth(40), mpb.WithRefreshRate(150*time.Millisecond), mpb.WithAutoRefresh())
	total := p.AddBar(0,
		mpb.BarPriority(1<<30), // stays at the bottom
		mpb.PrependDecorators(decor.Name("total ", decor.WC{W: 30, C: decor.DindentRight}),
			decor.CountersKibiByte("% .1f / % .1f", decor.WC{W: 22})),
		mpb.AppendDecorators(decor.AverageSpeed(decor.SizeB1024(0), " % .1f", decor.WC{W: 14}),
			decor.Name(" ETA "), decor.AverageETA(decor.ET_STYLE_GO)),
	)
	return &Bars{p: p, total: total, bars: map[string]*mpb.Bar{}}
}

// Planned implements prefetch.Observer.
func (b *Bars) Planned(int) {}

// ImageStarted implements prefetch.Observer.
func (b *Bars) ImageStarted(ref string) {
	bar := b.p.AddBar(0, mpb.BarRemoveOnComplete(),
		mpb.PrependDecorators(decor.Name(shorten(ref, 30), decor.WC{W: 31, C: decor.DindentRight}),
			decor.CountersKibiByte("% .1f / % .1f", decor.WC{W: 22})),
		mpb.AppendDecorators(decor.AverageSpeed(decor.SizeB1024(0), " % .1f", decor.WC{W: 14}),
			decor.Name(" ETA "), decor.AverageETA(decor.ET_STYLE_GO)),
	)
	b.mu.Lock()
	b.bars[ref] = bar
	b.mu.Unlock()
}

// BlobsPlanned implements prefetch.Observer.
func (b *Bars) BlobsPlanned(ref string, n int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.sum += n
	b.total.SetTotal(b.sum, false)
	if bar := b.bars[ref]; bar != nil {
		bar.SetTotal(n, false)
	}
}

// BlobProgress implements prefetch.Observer: the bars move with every
// chunk a download writes.
func (b *Bars) BlobProgress(ref string, n int64) { b.BlobDone(ref, n, true) }

// BlobDone implements prefetch.Observer.
func (b *Bars) BlobDone(ref string, n int64, _ bool) {
	b.total.IncrInt64(n)
	b.mu.Lock()
	bar := b.bars[ref]
	b.mu.Unlock()
	if bar != nil {
		bar.IncrInt64(n)
	}
}

// ImageDone implements prefetch.Observer.
func (b *Bars) ImageDone(r prefetch.ImageReport) {
	b.mu.Lock()
	bar := b.bars[r.Ref]
	delete(b.bars, r.Ref)
	b.mu.Unlock()
	if bar == nil {
		return
	}
	if r.Error != "" {
		bar.Abort(true)
		return
	}
	bar.SetTotal(-1, true)
}

// Stop completes the bars and waits for the last frame.
func (b *Bars) Stop() {
	b.mu.Lock()
	for ref, bar := range b.bars {
		bar.Abort(true)
		delete(b.bars, ref)
	}
	b.mu.Unlock()
	b.total.SetTotal(-1, true)
	b.p.Wait()
}

func shorten(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n+1:]
}

// Lines prints one progress line per interval, for logs and CI.
type Lines struct {
	w     io.Writer
	prog  prefetch.Progress
	start time.Time
	stop  chan struct{}
	done  chan struct{}
	once  sync.Once
}

// NewLines starts printing to w every interval.
func NewLines(w io.Writer, interval time.Duration) *Lines {
	l := &Lines{w: w, start: time.Now(), stop: make(chan struct{}), done: make(chan struct{})}
	go l.loop(interval)
	return l
}

func (l *Lines) loop(interval time.Duration) {
	defer close(l.done)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
			l.print()
		}
	}
}

func (l *Lines) print() {
	s := l.prog.Snapshot()
	el := time.Since(l.start)
	rate := float64(s.BytesDone) / el.Seconds()
	_, _ = fmt.Fprintf(l.w, "prefetch: %d/%d images (%d failed), %s / %s, %s/s, %s elapsed\n",
		s.ImagesDone, s.Images, s.ImagesFailed, prefetch.HumanBytes(s.BytesDone), prefetch.HumanBytes(s.BytesPlanned),
		prefetch.HumanBytes(int64(rate)), el.Round(time.Second))
}

// Planned implements prefetch.Observer.
func (l *Lines) Planned(n int) { l.prog.Planned(n) }

// ImageStarted implements prefetch.Observer.
func (l *Lines) ImageStarted(ref string) { l.prog.ImageStarted(ref) }

// BlobsPlanned implements prefetch.Observer.
func (l *Lines) BlobsPlanned(ref string, n int64) { l.prog.BlobsPlanned(ref, n) }

// BlobProgress implements prefetch.Observer.
func (l *Lines) BlobProgress(ref string, n int64) { l.prog.BlobProgress(ref, n) }

// BlobDone implements prefetch.Observer.
func (l *Lines) BlobDone(ref string, n int64, up bool) { l.prog.BlobDone(ref, n, up) }

// ImageDone implements prefetch.Observer.
func (l *Lines) ImageDone(r prefetch.ImageReport) { l.prog.ImageDone(r) }

// Stop prints a last line and stops the ticker.
func (l *Lines) Stop() {
	l.once.Do(func() {
		close(l.stop)
		<-l.done
		l.print()
	})
}
