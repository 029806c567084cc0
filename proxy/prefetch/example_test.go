package prefetch_test

import (
	"fmt"
	"os"
	"strings"

	"github.com/stowage/stowage/config"
	"github.com/stowage/stowage/config/imagelist"
	"github.com/stowage/stowage/proxy"
	"github.com/stowage/stowage/proxy/prefetch"
	"github.com/stowage/stowage/storage"
	"github.com/stowage/stowage/upstream"
)

// Example prefetches an image list into a cache directory. Here the list
// names a registry the configuration does not allow, so the run is refused
// before anything is contacted.
func Example() {
	cfg := config.Default()
	dir, _ := os.MkdirTemp("", "stowage-example-")
	defer os.RemoveAll(dir)
	cfg.Storage.Root = dir

	l, _ := imagelist.ParseText("images-list.txt", strings.NewReader("##base\nalpine:3.20\nunknown.example/app:v1\n"))
	lists := []prefetch.NamedList{{Name: "images-list.txt", List: l}}
	if err := prefetch.CheckRegistries(cfg, lists); err != nil {
		fmt.Println(err)
	}

	store, _ := storage.NewFilesystem(dir)
	defer store.Close()
	p, _ := proxy.New(cfg, store, func(host string, u config.Upstream) (upstream.Registry, error) {
		return upstream.New(host, u)
	})
	defer p.Close()
	eng, _ := prefetch.New(p, store, prefetch.WithConcurrency(4))
	// With the unknown registry removed, eng.Run would fetch alpine:3.20 and
	// pin it under "images-list.txt":
	//   rep, err := eng.Run(ctx, prefetch.Request{Lists: lists, Platforms: []string{"linux/amd64"}}, nil)
	//   rep.WriteText(os.Stdout)
	_ = eng
	// Output:
	// prefetch: registry is not an upstream of this proxy: unknown.example (list images-list.txt); add it under upstreams in the config
}
