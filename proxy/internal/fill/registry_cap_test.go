package fill

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"

	"github.com/opencontainers/go-digest"
)

// TestRegistryMaxRunning: past the cap a fill for a new digest is refused
// with ErrTooMany, joining a running fill still works, and a slot frees
// when a fill ends.
func TestRegistryMaxRunning(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := NewRegistry()
		defer r.Close()
		r.SetMaxRunning(2)
		release := make(chan struct{})
		run := func(ctx context.Context, f *Fill) error {
			select {
			case <-release:
			case <-ctx.Done():
			}
			return errors.New("done")
		}
		d := func(s string) digest.Digest { return digest.FromString(s) }
		h1, started, err := r.Join(Start{Digest: d("a"), Run: run})
		if err != nil || !started {
			t.Fatalf("first join: started=%v err=%v", started, err)
		}
		h2, _, err := r.Join(Start{Digest: d("b"), Run: run})
		if err != nil {
			t.Fatalf("second join: %v", err)
		}
		if _, _, err := r.Join(Start{Digest: d("c"), Run: run}); !errors.Is(err, ErrTooMany) {
			t.Fatalf("third digest past the cap: err=%v, want ErrTooMany", err)
		}
		h3, started, err := r.Join(Start{Digest: d("a"), Run: run})
		if err != nil || started {
			t.Fatalf("joining a running fill past the cap: started=%v err=%v", started, err)
		}
		close(release)
		synctest.Wait()
		for _, h := range []*Hold{h1, h2, h3} {
			h.Release()
		}
		h4, started, err := r.Join(Start{Digest: d("c"), Run: run})
		if err != nil || !started {
			t.Fatalf("after the fills ended: started=%v err=%v", started, err)
		}
		h4.Release()
	})
}
