package main

import (
	"context"
	"log/slog"
	"time"

	"github.com/stowage/stowage/proxy"
	"github.com/stowage/stowage/storage"
	"github.com/stowage/stowage/storage/usage"
)

// pullSaveInterval is how often a server writes the pulls it counted (one
// small file under <root>/stowage/pulls/ per interval with pulls).
const pullSaveInterval = time.Minute

// newPullCounter counts the proxy's pulls per repository (proxy.PullCounter)
// into the store's pull records.
func newPullCounter(store *storage.Store, p *proxy.Proxy) (*usage.Pulls, error) {
	c, err := usage.NewPulls(store, nil)
	if err != nil {
		return nil, err
	}
	p.SetPullCounter(c)
	return c, nil
}

// runPulls restores the persisted counts, then saves every
// pullSaveInterval until ctx ends.
func runPulls(ctx context.Context, c *usage.Pulls, log *slog.Logger) error {
	return c.Run(ctx, pullSaveInterval, func(msg string, err error) { log.Warn(msg, "err", err) })
}

// flushPulls saves what was counted after runPulls' last save (responses
// that finished while the server drained).
func flushPulls(c *usage.Pulls, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Save(ctx); err != nil {
		log.Warn("saving pull counts at shutdown", "err", err)
	}
}

// trackPulls shows the pull counts on the dashboard's repositories.
func (s *prefetchService) trackPulls(c *usage.Pulls) {
	if s.dash != nil && c != nil {
		s.dash.SetPulls(c)
	}
}
