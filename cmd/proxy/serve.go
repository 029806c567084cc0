package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"

	"github.com/stowage/stowage/config"
	"github.com/stowage/stowage/proxy"
	"github.com/stowage/stowage/proxy/cluster"
	"github.com/stowage/stowage/storage"
	"github.com/stowage/stowage/upstream"
)

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "proxy",
		Short:         "Stowage: a pull-through caching container registry proxy",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newServeCmd(), newVersionCmd(), newPrefetchCmd(), newExportCmd(), newImportCmd(), newGCCmd(), newVerifyCmd(), newStatsCmd())
	return root
}

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := fmt.Fprintln(cmd.OutOrStdout(), "stowage", version)
			return err
		},
	}
}

func newServeCmd() *cobra.Command {
	var flags configFlags
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Serve the registry API as a pull-through cache",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := flags.load()
			if err != nil {
				return err
			}
			return serve(cmd.Context(), cfg, newLogger(cfg.Log))
		},
	}
	flags.register(cmd)
	return cmd
}

// openStore opens the configured cache backend.
func openStore(cfg *config.Config) (*storage.Store, error) {
	switch cfg.Storage.Driver {
	case "inmemory":
		return storage.NewInMemory()
	case "s3":
		params, err := cfg.Storage.S3DriverParameters()
		if err != nil {
			return nil, err
		}
		return storage.NewS3(context.Background(), params, storage.WithRedirect(cfg.Storage.Redirect))
	}
	return storage.NewFilesystem(cfg.Storage.Root)
}

// upstreamFactory builds real upstream clients wired to the proxy's logger
// and metrics.
// and metrics, all drawing on one bandwidth budget.
func upstreamFactory(cfg *config.Config, log *slog.Logger, observe func(string, int, int), budget *upstream.Budget) proxy.UpstreamFactory {
	return func(host string, u config.Upstream) (upstream.Registry, error) {
		return upstream.New(host, u,
			upstream.WithLogger(log),
			upstream.WithUserAgent("stowage/"+version),
			upstream.WithMaxManifestSize(cfg.Cache.MaxManifestSize),
			upstream.WithRateLimitObserver(observe),
			upstream.WithBudget(budget),
		)
	}
}

// newProxy wires a Proxy over cfg's store; the caller closes both.
func newProxy(cfg *config.Config, log *slog.Logger, reg *prometheus.Registry) (*proxy.Proxy, *storage.Store, error) {
	store, err := openStore(cfg)
	if err != nil {
		return nil, nil, err
	}
	var p *proxy.Proxy
	observe := func(host string, limit, remaining int) {
		if p != nil {
			p.ObserveRateLimit(host, limit, remaining)
		}
	}
	opts := []proxy.Option{proxy.WithLogger(log), proxy.WithRegistry(reg)}
	budgetOpts := []upstream.BudgetOption{upstream.WithBudgetLogger(log), upstream.WithBudgetRegisterer(reg)}
	if cfg.Redis.Addr != "" {
		// Every Redis call is bounded by redis.timeout, and a failing Redis
		// is skipped for a while (cluster's circuit breaker): no client
		// request waits on a Redis that does not answer.
		rc := cluster.NewRedisClient(cfg.Redis.Addr, os.Getenv(cfg.Redis.PasswordEnv), cfg.Redis.DB, cfg.Redis.Timeout)
		// Every key lives under the cache's namespace (redis.namespace, by
		// default derived from the storage): caches sharing one Redis
		// never wait on each other.
		leases, err := cluster.NewRedisLeases(rc, cfg.RedisPrefix(), cfg.Redis.LeaseTTL,
			cluster.WithTimeout(cfg.Redis.Timeout), cluster.WithLogger(log), cluster.WithMetrics(reg))
		if err != nil {
			return nil, nil, errors.Join(err, rc.Close(), store.Close())
		}
		tags, err := cluster.NewRedisTags(leases)
		if err != nil {
			return nil, nil, errors.Join(err, store.Close())
		}
		opts = append(opts, proxy.WithCoordinator(leases), proxy.WithTagSync(tags))
		shared, err := cluster.NewRedisBudget(rc, cfg.RedisPrefix())
		if err != nil {
			return nil, nil, errors.Join(err, store.Close())
		}
		budgetOpts = append(budgetOpts, upstream.WithBudgetStore(shared))
		popts, err := peerOptions(cfg, leases)
		if err != nil {
			return nil, nil, errors.Join(err, store.Close())
		}
		opts = append(opts, popts...)
	}
	budget, err := upstream.NewBudget(cfg.Link, budgetOpts...)
	if err != nil {
		return nil, nil, errors.Join(err, store.Close())
	}
	p, err = proxy.New(cfg, store, upstreamFactory(cfg, log, observe, budget), opts...)
	if err != nil {
		return nil, nil, errors.Join(err, store.Close())
	}
	return p, store, nil
}

// cleanLeftovers removes what dead processes left in the cache (staging
// directories whose lock is free, old temporary files). Other processes'
// fills on a shared root are untouched, so every command that opens the
// cache calls it at start.
func cleanLeftovers(ctx context.Context, store *storage.Store, log *slog.Logger) {
	if err := store.CleanStaging(ctx); err != nil {
		log.Warn("cleaning leftovers of interrupted fills and writes", "err", err)
	}
}

// serve runs the HTTP server until ctx ends, then shuts down gracefully.
func serve(ctx context.Context, cfg *config.Config, log *slog.Logger) error {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	p, store, err := newProxy(cfg, log, reg)
	if err != nil {
		return err
	}
	defer store.Close()
	defer p.Close()
	// Only the cheap part of the cleanup runs before serving; the walk of
	// the whole tree for old temporary files runs in the background with
	// the usage index's build (start-up stays instant on a large cache).
	cleanStagingDirs(ctx, store, log)
	eng, err := newEvictionEngine(cfg, log, reg, store, p)
	if err != nil {
		return err
	}
	pf, handler, err := newPrefetchService(cfg, log, reg, p, store)
	if err != nil {
		return err
	}
	closeJobs := sync.OnceFunc(pf.close) // at shutdown, or on an early return
	defer closeJobs()
	pf.trackUsage(cfg, store, eng)
	pulls, err := newPullCounter(store, p)
	if err != nil {
		return err
	}
	defer flushPulls(pulls, log) // after the drain: its pulls too
	pf.trackPulls(pulls)
	front, err := frontHandler(cfg, handler, log)
	if err != nil {
		return err
	}
	var certs *proxy.CertReloader
	if cfg.TLS.Enabled() {
		if certs, err = proxy.NewCertReloader(cfg.TLS.CertFile, cfg.TLS.KeyFile, log); err != nil {
			return err
		}
	}
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", cfg.Listen)
	if err != nil {
		return err
	}
	internal, err := listenInternal(ctx, cfg, p, log)
	if err != nil {
		return errors.Join(err, ln.Close())
	}
	srv := newHTTPServer(cfg, front, log)
	if certs != nil {
		srv.TLSConfig = certs.TLSConfig()
		ln = tls.NewListener(ln, srv.TLSConfig)
	}
	where := []any{"root", cfg.Storage.Root}
	if cfg.Storage.Driver == "s3" {
		where = []any{"bucket", cfg.Storage.S3["bucket"], "rootdirectory", cfg.Storage.S3["rootdirectory"], "redirect", cfg.Storage.Redirect}
	}
	log.Info("serving", append([]any{"listen", ln.Addr().String(), "driver", cfg.Storage.Driver}, append(where,
		"default_upstream", cfg.DefaultUpstream, "tls", cfg.TLS.Enabled(), "auth", cfg.Auth.Htpasswd != "", "version", version)...)...)
	pf.start()
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return eng.Run(gctx) })
	g.Go(func() error { return runPulls(gctx, pulls, log) })
	g.Go(func() error {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})
	g.Go(internal.serve)
	g.Go(func() error { cleanOrphansPeriodically(gctx, store, log); return nil })
	g.Go(func() error {
		<-gctx.Done()
		return shutdown(gctx, cfg, log, p, srv, internal, closeJobs)
	})
	return g.Wait()
}

// newHTTPServer builds the client-facing server with its limits.
func newHTTPServer(cfg *config.Config, h http.Handler, log *slog.Logger) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    cfg.Server.MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
}

// frontHandler puts the client-facing protections (probes first, Basic
// authentication, idle-write deadline) in front of handler.
func frontHandler(cfg *config.Config, handler http.Handler, log *slog.Logger) (http.Handler, error) {
	o := proxy.ServingOptions{WriteIdleTimeout: cfg.Server.WriteIdleTimeout}
	if cfg.Auth.Htpasswd != "" {
		h, err := proxy.NewHtpasswd(cfg.Auth.Htpasswd, cfg.Auth.Realm, log)
		if err != nil {
			return nil, err
		}
		o.Auth = h
	}
	return proxy.Serving(handler, o), nil
}

// shutdown stops accepting, lets running responses and fills finish up to
// server.shutdown_timeout, then cuts what remains; the caller's deferred
// closes clean up the rest.
//
// The order matters for a rolling update that must not lose a download:
// the client listener closes first (/readyz already answers 503), the
// proxy takes no new lease (Proxy.SetDraining), the prefetch schedule and
// jobs stop once no client is served any more, and the fills still running
// finish — their leases renewed — while the internal listener keeps
// serving the other replicas that stream them. Only once those fills have
// ended (or the deadline passed) does the internal listener close; the
// deferred Proxy.Close then cancels what is left, which hands their
// staged bytes over (on a shared filesystem) and then releases their leases
// at once, so that another replica takes over without waiting for them to
// expire and resumes from what was staged.
func shutdown(ctx context.Context, cfg *config.Config, log *slog.Logger, p *proxy.Proxy, srv *http.Server, internal *internalServer,
	stopJobs func()) error {
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.Server.ShutdownTimeout)
	defer cancel()
	p.SetDraining(true) // /readyz answers 503: the Service stops sending new clients
	log.Info("shutting down", "timeout", cfg.Server.ShutdownTimeout, "fills", len(p.Fills()))
	err := srv.Shutdown(sctx)
	stopJobs()
	// Fills nobody here waits for any more (other replicas may stream
	// them) still finish and commit within the deadline.
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for len(p.Fills()) > 0 && sctx.Err() == nil {
		select {
		case <-tick.C:
		case <-sctx.Done():
		}
	}
	if sctx.Err() != nil {
		log.Warn("shutdown deadline reached; cutting the remaining responses and fills", "fills", len(p.Fills()))
		err = errors.Join(err, srv.Close(), internal.close())
	} else {
		err = errors.Join(err, internal.shutdown(sctx))
	}
	if errors.Is(err, context.DeadlineExceeded) {
		err = nil // reported above; the cut is the configured behaviour
	}
	return err
}
