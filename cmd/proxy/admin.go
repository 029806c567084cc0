package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/robfig/cron/v3"

	"github.com/stowage/stowage/config"
	"github.com/stowage/stowage/proxy"
	"github.com/stowage/stowage/proxy/dashboard"
	"github.com/stowage/stowage/proxy/prefetch"
	"github.com/stowage/stowage/storage"
)

// Bounds of the server's background prefetch jobs.
const (
	adminParallelJobs = 2
	adminKeptJobs     = 100
)

// adminToken reads the admin API token: admin.token_env first, then
// admin.token_file. "" disables the admin API.
func adminToken(a config.Admin) (string, error) {
	if a.TokenEnv != "" {
		if v := strings.TrimSpace(os.Getenv(a.TokenEnv)); v != "" {
			return v, nil
		}
	}
	if a.TokenFile != "" {
		b, err := os.ReadFile(a.TokenFile)
		if err != nil {
			return "", fmt.Errorf("admin.token_file: %w", err)
		}
		return strings.TrimSpace(string(b)), nil
	}
	return "", nil
}

// prefetchService is what serve runs besides the proxy: the job runner
// behind the admin API and the schedule.
type prefetchService struct {
	jobs   *prefetch.Jobs
	cron   *cron.Cron
	dash   *dashboard.Dashboard
	log    *slog.Logger
	mu     sync.Mutex
	last   string      // id of the last scheduled job
	shared *sharedJobs // the cluster's job list (redis.addr); nil without Redis
}

// newPrefetchService builds the engine and job runner, the handler that
// serves /api/ (admin API, or 404 when no token is configured) in front of
// the proxy, and the schedule (not yet started).
func newPrefetchService(cfg *config.Config, log *slog.Logger, reg prometheus.Registerer, p *proxy.Proxy, store *storage.Store) (*prefetchService, http.Handler, error) {
	eng, err := prefetch.New(p, store, prefetch.WithLogger(log.With("component", "prefetch")),
		prefetch.WithRegisterer(reg), prefetch.WithConcurrency(cfg.Prefetch.Concurrency))
	if err != nil {
		return nil, nil, err
	}
	jobs, err := prefetch.NewJobs(eng, adminParallelJobs, adminKeptJobs)
	if err != nil {
		return nil, nil, err
	}
	jobs.SetMaxPending(cfg.Server.MaxAdminJobs)
	// Job records live beside the cache, so GET answers for a job across
	// a restart of the server.
	loadCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	err = jobs.Persist(loadCtx, store)
	cancel()
	if err != nil {
		return nil, nil, err
	}
	s := &prefetchService{jobs: jobs, log: log}
	token, err := adminToken(cfg.Admin)
	if err != nil {
		return nil, nil, err
	}
	api := http.NotFoundHandler()
	var adminAPI http.Handler
	if token != "" {
		adminAPI, err = prefetch.NewAdminHandler(jobs, prefetch.AdminOptions{Token: token, Platforms: cfg.Prefetch.Platforms,
			Fills: p.FillsHandler(),
			Check: func(l []prefetch.NamedList) error { return prefetch.CheckRegistries(cfg, l) }})
		if err != nil {
			return nil, nil, err
		}
		api = adminAPI
	}
	if s.dash, err = newDashboard(cfg, log, reg, p, store, jobs, token, adminAPI); err != nil {
		return nil, nil, err
	} else if s.dash != nil {
		api = s.dash // serves /ui/ and the read API, passes the rest of /api/ to adminAPI
	}
	// A plain prefix switch rather than a ServeMux: the registry API keeps
	// its own routing (a ServeMux would redirect uncleaned paths).
	mux := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/api/") || (s.dash != nil && uiPath(r.URL.Path)) {
			api.ServeHTTP(w, r)
			return
		}
		if uiPath(r.URL.Path) && !cfg.UI.Disabled {
			dashboardOff(w)
			return
		}
		p.ServeHTTP(w, r)
	})
	if cfg.Prefetch.Schedule != "" {
		s.cron = cron.New()
		if _, err := s.cron.AddFunc(cfg.Prefetch.Schedule, func() { s.scheduled(cfg) }); err != nil {
			if s.dash != nil {
				s.dash.Close()
			}
			return nil, nil, fmt.Errorf("prefetch.schedule %q: %w", cfg.Prefetch.Schedule, err)
		}
	}
	if cfg.Redis.Addr != "" {
		// Jobs are the cluster's: recorded in Redis, visible, followed
		// and cancelled from every replica, run by whichever claims them
		// (from start on).
		if s.shared, err = newSharedJobs(cfg, log); err != nil {
			if s.dash != nil {
				s.dash.Close()
			}
			return nil, nil, err
		}
	}
	return s, mux, nil
}

// start runs the claim loop of the cluster's shared jobs and the schedule.
func (s *prefetchService) start() {
	if s.shared != nil {
		s.jobs.Share(s.shared.jobs)
	}
	if s.cron != nil {
		s.cron.Start()
		s.log.Info("prefetch schedule started", "entries", len(s.cron.Entries()))
	}
}

// close stops the schedule and cancels running jobs.
func (s *prefetchService) close() {
	if s.cron != nil {
		<-s.cron.Stop().Done()
	}
	s.jobs.Close() // shared jobs running here are handed back first
	if s.shared != nil {
		s.shared.close()
	}
	if s.dash != nil {
		s.dash.Close()
	}
}

// scheduled re-reads prefetch.lists and prefetch.images and runs them as a
// job (tags are resolved again each time), unless the previous scheduled
// job is still running.
func (s *prefetchService) scheduled(cfg *config.Config) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.last != "" {
		if j, ok := s.jobs.Get(s.last); ok && !j.State.Done() {
			s.log.Warn("scheduled prefetch skipped: the previous one is still running", "job", s.last)
			return
		}
	}
	if s.shared != nil && !s.shared.firstForTick(time.Now()) {
		s.log.Info("scheduled prefetch: another replica submitted this tick's job")
		return
	}
	lists, images, err := loadLists(cfg, nil)
	if err == nil {
		err = prefetch.CheckRegistries(cfg, lists)
	}
	if err != nil {
		s.log.Error("scheduled prefetch", "err", err)
		return
	}
	job, err := s.jobs.Submit("schedule", prefetch.Request{Lists: lists, Images: images,
		Platforms: cfg.Prefetch.Platforms, InlinePin: "config"})
	if err != nil {
		s.log.Error("scheduled prefetch", "err", err)
		return
	}
	s.last = job.ID
}

// adminClient talks to a running server's admin API.
type adminClient struct {
	base  string
	token string
	hc    *http.Client
}

func newAdminClient(server, tokenFile string) (*adminClient, error) {
	u, err := url.Parse(server)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("--server %q: want an http:// or https:// URL", server)
	}
	token := os.Getenv("STOWAGE_ADMIN_TOKEN")
	if tokenFile != "" {
		b, err := os.ReadFile(tokenFile)
		if err != nil {
			return nil, err
		}
		token = strings.TrimSpace(string(b))
	}
	if token == "" {
		return nil, errors.New("--server needs a token: --token-file or env STOWAGE_ADMIN_TOKEN")
	}
	return &adminClient{base: strings.TrimSuffix(server, "/"), token: token, hc: &http.Client{Timeout: time.Minute}}, nil
}

// serverCATransport is a transport that verifies the https server against
// the system roots plus the CA certificates of the PEM file caFile (the
// issuer of a cluster-internal certificate, e.g. a TLS Secret's ca.crt).
func serverCATransport(server, caFile string) (*http.Transport, error) {
	if !strings.HasPrefix(server, "https://") {
		return nil, fmt.Errorf("--server-ca with --server %q: the CA is for an https:// server", server)
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("--server-ca: %w", err)
	}
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool() // no system roots here: the file's CAs alone
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("--server-ca %s: no PEM certificate in the file", caFile)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	return tr, nil
}

func (c *adminClient) do(ctx context.Context, method, path, ctype string, body []byte, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		var e struct{ Error string }
		_ = json.Unmarshal(data, &e)
		return apiError{code: resp.StatusCode, msg: fmt.Sprintf("%s %s: %s: %s", method, path, resp.Status, e.Error)}
	}
	return json.Unmarshal(data, out)
}

// apiError is an admin API answer that is not a success.
type apiError struct {
	code int
	msg  string
}

func (e apiError) Error() string { return e.msg }

// followUnavailable bounds the polls in a row a follow goes on through
// 503s (the server cannot reach the cluster's shared job list for a
// while: Redis restarting) before it gives up.
const followUnavailable = 60

// prefetchRemote posts each list as a job to a running server and
// follows the jobs to their end, printing progress lines to stderr and
// the reports to stdout.
func prefetchRemote(ctx context.Context, o prefetchOptions, stdout, stderr io.Writer) error {
	if len(o.files) == 0 {
		return errors.New("--server needs -f LIST")
	}
	c, err := newAdminClient(o.server, o.tokenFile)
	if err != nil {
		return err
	}
	if o.serverCA != "" {
		if c.hc.Transport, err = serverCATransport(o.server, o.serverCA); err != nil {
			return err
		}
	}
	var ids []string
	for _, f := range o.files {
		body, name, err := o.readList(f)
		if err != nil {
			return err
		}
		q := url.Values{"name": {filepath.Base(name)}, "platform": o.platforms}
		var job prefetch.Job
		if err := c.do(ctx, http.MethodPost, "/api/v1/prefetch?"+q.Encode(), "text/plain", body, &job); err != nil {
			return err
		}
		_, _ = fmt.Fprintf(stderr, "prefetch: %s submitted as job %s\n", f, job.ID)
		ids = append(ids, job.ID)
	}
	failed := false
	for _, id := range ids {
		job, err := c.follow(ctx, id, o.progress, stderr)
		if err != nil {
			return err
		}
		if job.Report == nil {
			_, _ = fmt.Fprintf(stderr, "prefetch: job %s %s: %s\n", id, job.State, job.Error)
			failed = true
			continue
		}
		if err := writeReport(job.Report, o.output, stdout); err != nil {
			var ee exitError
			if !errors.As(err, &ee) {
				return err
			}
			failed = true
		}
		if o.wait && !remoteGate(job, stderr) {
			failed = true
		}
	}
	if failed {
		return exitError{code: 2}
	}
	return nil
}

// follow polls a job until it ends.
func (c *adminClient) follow(ctx context.Context, id string, every time.Duration, stderr io.Writer) (prefetch.Job, error) {
	poll := min(every, time.Second)
	if poll <= 0 {
		poll = time.Second
	}
	last := time.Now()
	unavailable := 0
	for {
		var job prefetch.Job
		err := c.do(ctx, http.MethodGet, "/api/v1/prefetch/"+url.PathEscape(id), "", nil, &job)
		var ae apiError
		if errors.As(err, &ae) && ae.code == http.StatusServiceUnavailable && unavailable < followUnavailable {
			if unavailable == 0 {
				_, _ = fmt.Fprintf(stderr, "prefetch: job %s: %v; still following\n", id, err)
			}
			unavailable++
			if err := sleepCtx(ctx, poll); err != nil {
				return job, err
			}
			continue
		}
		if err != nil {
			return job, err
		}
		unavailable = 0
		if job.State.Done() {
			return job, nil
		}
		if time.Since(last) >= every {
			p := job.Progress
			_, _ = fmt.Fprintf(stderr, "prefetch: job %s %s: %d/%d images, %s / %s\n", id, job.State, p.ImagesDone, p.Images,
				prefetch.HumanBytes(p.BytesDone), prefetch.HumanBytes(p.BytesPlanned))
			last = time.Now()
		}
		if err := sleepCtx(ctx, poll); err != nil {
			return job, err
		}
	}
}

// sleepCtx waits d or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}
