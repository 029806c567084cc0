package proxy_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/stowage/stowage/config"
	"github.com/stowage/stowage/proxy"
	"github.com/stowage/stowage/proxy/internal/testenv"
)

// TestRecentStaleServes: a tag served stale because its upstream is down
// is recorded with its repository, tag, digest, age, upstream and error,
// newest first; the list keeps the last StaleServesKept.
func TestRecentStaleServes(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{configure: func(c *config.Config) { c.Cache.TagTTL = time.Minute }})
	img := testenv.DockerImage(t, 1, 256)
	d, _ := img.Digest()
	e.up.Push(t, "library/st:v1", img)
	e.up.Push(t, "library/st:v2", img)
	for _, tag := range []string{"v1", "v2"} {
		if _, err := remote.Head(e.ref("st:" + tag)); err != nil {
			t.Fatal(err)
		}
	}
	if got := e.proxy.RecentStaleServes(); len(got) != 0 {
		t.Fatalf("before any stale serve: %+v", got)
	}
	e.up.Close()
	e.clock.Advance(30 * time.Minute)
	for _, tag := range []string{"v1", "v2"} {
		if _, err := remote.Head(e.ref("st:" + tag)); err != nil {
			t.Fatalf("stale %s: %v", tag, err)
		}
	}
	got := e.proxy.RecentStaleServes()
	if len(got) != 2 {
		t.Fatalf("recent stale serves: %+v", got)
	}
	for i, tag := range []string{"v2", "v1"} { // newest first
		s := got[i]
		if s.Repository != "docker.io/library/st" || s.Tag != tag || s.Digest.String() != d.String() ||
			s.Upstream != "docker.io" || s.Error == "" || s.AgeSeconds != (30*time.Minute).Seconds() || s.Time.IsZero() {
			t.Errorf("stale serve %d: %+v", i, s)
		}
	}
	// Bounded: many more serves keep only the last StaleServesKept.
	for i := range proxy.StaleServesKept {
		e.clock.Advance(time.Second)
		tag := []string{"v1", "v2"}[i%2]
		if _, err := remote.Head(e.ref("st:" + tag)); err != nil {
			t.Fatalf("stale serve %d: %v", i, err)
		}
	}
	got = e.proxy.RecentStaleServes()
	if len(got) != proxy.StaleServesKept {
		t.Fatalf("%d stale serves kept, want %d", len(got), proxy.StaleServesKept)
	}
	if want := fmt.Sprint((30*time.Minute + proxy.StaleServesKept*time.Second).Seconds()); fmt.Sprint(got[0].AgeSeconds) != want {
		t.Errorf("newest age %v, want %s", got[0].AgeSeconds, want)
	}
}
