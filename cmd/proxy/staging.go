package main

import (
	"context"
	"log/slog"
	"time"

	"github.com/stowage/stowage/storage"
)

// cleanOrphansPeriodically repeats the staging cleanup every
// storage.OrphanGrace until ctx ends: the start-up pass leaves recently
// dead replicas' staging directories for a takeover to adopt, and this
// removes them once they are older (a replica that died and was not
// restarted leaves nothing behind for long).
func cleanOrphansPeriodically(ctx context.Context, store *storage.Store, log *slog.Logger) {
	t := time.NewTicker(storage.OrphanGrace)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			cleanStagingDirs(ctx, store, log)
		}
	}
}
