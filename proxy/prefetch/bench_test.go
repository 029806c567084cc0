package prefetch_test

import (
	"testing"
	"time"

	"github.com/stowage/stowage/proxy/internal/testenv"
	"github.com/stowage/stowage/proxy/prefetch"
)

// BenchmarkPrefetchThroughput prefetches images built from three shared
// base layers (two per image) plus one unique layer each into an empty
// cache, from an upstream that paces every blob stream to chunk/pause
// bytes per second. It reports the wall time over the ideal time (unique
// bytes / (concurrency × per-stream bandwidth)): 1.0 means the engine keeps
// every allowed stream busy and fetches each blob once. Two data sets:
// "shared-base" (8 images, 256 KiB bases, 64 KiB own layers: the three
// big shared blobs make a critical path the ideal does not account for)
// and "many-images" (32 images, 64 KiB bases, 192 KiB own layers: enough
// independent blobs to keep every stream busy).
//
//	go test -run '^$' -bench PrefetchThroughput -benchtime 5x ./proxy/prefetch/
func BenchmarkPrefetchThroughput(b *testing.B) {
	for _, ds := range []struct {
		name          string
		images        int
		base, ownSize int64
	}{
		{"shared-base", 8, 256 << 10, 64 << 10},
		{"many-images", 32, 64 << 10, 192 << 10},
	} {
		b.Run(ds.name, func(b *testing.B) { benchPrefetch(b, ds.images, ds.base, ds.ownSize) })
	}
}

func benchPrefetch(b *testing.B, images int, base, ownSize int64) {
	const (
		chunk       = 16 << 10
		pause       = 10 * time.Millisecond
		concurrency = 4
	)
	up := testenv.Start(b, testenv.Options{})
	refs, _ := sharedImagesSized(b, up, images, base, ownSize)
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
