package main

import (
	"io"
	"log/slog"
	"net/http"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/stowage/stowage/config"
	"github.com/stowage/stowage/proxy"
	"github.com/stowage/stowage/proxy/dashboard"
	"github.com/stowage/stowage/proxy/prefetch"
	"github.com/stowage/stowage/storage"
	"github.com/stowage/stowage/storage/evict"
)

// newDashboard builds the web dashboard (/ui/ and its read API) in front
// of the admin handler, or returns nil when it is off: ui.disabled, or
// neither an admin token nor ui.public_read_only. admin is nil when the
// admin API is disabled.
func newDashboard(cfg *config.Config, log *slog.Logger, reg prometheus.Registerer, p *proxy.Proxy,
	store *storage.Store, jobs *prefetch.Jobs, token string, admin http.Handler,
) (*dashboard.Dashboard, error) {
	if cfg.UI.Disabled || (token == "" && !cfg.UI.PublicReadOnly) {
		return nil, nil
	}
	g, ok := reg.(prometheus.Gatherer)
	if !ok {
		log.Warn("dashboard disabled: the metrics registry cannot be gathered")
		return nil, nil
	}
	return dashboard.New(dashboard.Options{
		Proxy: p, Store: store, Gatherer: g, Jobs: jobs, Admin: admin,
		Token: token, PublicReadOnly: cfg.UI.PublicReadOnly,
		SampleInterval: cfg.UI.SampleInterval, PullHost: cfg.UI.PullHost,
		Version: version, Logger: log.With("component", "dashboard"),
	})
}

// indexUsage shows the eviction engine's usage index on the dashboard.
type indexUsage struct {
	eng  *evict.Engine
	capa int64
	disk evict.DiskSpace // nil: not a local filesystem
}

func (u indexUsage) Usage() (used, capacity, fsTotal, fsFree int64, objects int) {
	used, objects = u.eng.Usage() // the cluster's, with Redis
	if u.disk != nil {
		if total, free, err := u.disk(); err == nil {
			fsTotal, fsFree = int64(total), int64(free) //nolint:gosec // filesystem sizes fit
		}
	}
	return used, u.capa, fsTotal, fsFree, objects
}

func (u indexUsage) IsReady() bool { return u.eng.Index().IsReady() }

// RecentEvictions shows the engine's last evictions (newest first) in the
// dashboard's live activity.
func (u indexUsage) RecentEvictions() []dashboard.Eviction { return u.eng.RecentEvictions() }

// trackUsage plugs the eviction engine's usage index into the dashboard.
func (s *prefetchService) trackUsage(cfg *config.Config, store *storage.Store, eng *evict.Engine) {
	if s.dash == nil || eng == nil {
		return
	}
	u := indexUsage{eng: eng, capa: int64(cfg.Cache.MaxSize)}
	if root := store.Root(); root != "" {
		u.disk = evict.Statfs(root)
	}
	s.dash.SetUsage(u)
}

// dashboardOff answers /ui/ when the dashboard has no way to authorise
// anyone (no admin token, not public): a page that says how to turn it on,
// rather than a registry 404.
func dashboardOff(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusServiceUnavailable)
	_, _ = io.WriteString(w, `<!doctype html><html lang="en"><meta charset="utf-8"><title>Stowage dashboard is off</title>
<main style="font-family:system-ui,sans-serif;max-width:40rem;margin:3rem auto;line-height:1.5">
<h1>The Stowage dashboard is off</h1>
<p>It is protected like the admin API, and no admin token is configured. Set one
(<code>admin.token_env</code> or <code>admin.token_file</code>) to sign in with it, or set
<code>ui.public_read_only: true</code> for a read-only view without a token.</p></main></html>`)
}

// uiPath reports whether a request is for the dashboard's page.
func uiPath(path string) bool {
	return path == "/ui" || strings.HasPrefix(path, "/ui/")
}

var _ dashboard.EvictionSource = indexUsage{}
