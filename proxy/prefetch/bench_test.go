package prefetch_test

import (
	"testing"
	"time"

	"github.com/stowage/stowage/proxy/internal/testenv"
	"github.com/stowage/stowage/proxy/prefetch"
)

// BenchmarkPrefetchThroughput prefetches 8 images sharing 256 KiB base
// layers (plus a 64 KiB layer each) into
// an empty cache from an upstream that paces every blob stream to
// chunk/pause bytes per second. It reports the wall time over the ideal
// time (unique bytes / (concurrency × per-stream bandwidth)): 1.0 means the
// engine keeps every allowed stream busy and fetches each blob once.
//
//	go test -run '^$' -bench PrefetchThroughput -benchtime 5x ./proxy/prefetch/
func BenchmarkPrefetchThroughput(b *testing.B) {
	const (
		chunk       = 16 << 10
		pause       = 10 * time.Millisecond
		concurrency = 4
	)
	up := testenv.Start(b, testenv.Options{})
	refs, _ := sharedImagesSized(b, up, 8, 256<<10, 64<<10)
	up.SetFault(testenv.SlowBlobs(chunk, pause))
	perStream := float64(chunk) / pause.Seconds() // bytes per second
	var wall time.Duration
	var unique int64
	for b.Loop() {
		b.StopTimer()
		e := newEnv(b, up, "")
		eng := e.engine(prefetch.WithConcurrency(concurrency))
		b.StartTimer()
		start := time.Now()
		rep, err := eng.Run(b.Context(), prefetch.Request{Images: refs, NoPins: true}, nil)
		wall += time.Since(start)
		if err != nil || !rep.OK() {
			b.Fatalf("%v %+v", err, rep)
		}
		unique = rep.Totals.UpstreamBytes
	}
	ideal := time.Duration(float64(unique) / (concurrency * perStream) * float64(time.Second))
	avg := wall / time.Duration(b.N)
	b.ReportMetric(float64(avg)/float64(ideal), "x_ideal")
	b.ReportMetric(float64(unique)/avg.Seconds()/(1<<20), "MiB/s")
	b.ReportMetric(float64(unique)/(1<<10), "unique_KiB")
}
