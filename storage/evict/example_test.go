package evict_test

import (
	"context"
	"fmt"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/stowage/stowage/storage"
	"github.com/stowage/stowage/storage/evict"
)

// An engine over a store, with a 1 GiB cap: the proxy reports commits and
// hits through the Hooks, and Run keeps the cache within the cap.
func ExampleNew() {
	store, err := storage.NewInMemory()
	if err != nil {
		fmt.Println(err)
		return
	}
	defer store.Close()
	eng, err := evict.New(store, evict.Policy{MaxSize: 1 << 30, Grace: 10 * time.Minute})
	if err != nil {
		fmt.Println(err)
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- eng.Run(ctx) }()
	<-eng.Index().Ready() // built in the background; serving need not wait

	var hooks evict.Hooks = eng // what the proxy calls
	d := digest.FromString("a layer")
	hooks.Added(d, 7)
	hooks.Touched(d)
	used, objects := eng.Index().Usage()
	fmt.Println(used, objects)

	cancel()
	fmt.Println(<-done)
	// Output:
	// 7 1
	// <nil>
}
