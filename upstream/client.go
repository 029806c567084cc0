package upstream

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"

	"github.com/stowage/stowage/config"
)

// Client is a Registry for one logical upstream host. It is safe for
// concurrent use; build one per upstream with New and share it.
type Client struct {
	host      string
	endpoints []*endpoint
	cfg       config.Upstream
	opts      options
	log       *slog.Logger
	red       redactor
	base      *http.Transport
	auth      *authTransport
	http      *http.Client
	limits    *limits
}

var _ Registry = (*Client)(nil)

// endpoint is one base URL of the upstream. A path in the URL is a
// repository prefix: "https://harbor.corp/hub-cache" fetches library/alpine
// as hub-cache/library/alpine (a Harbor proxy-cache project).
type endpoint struct {
	base   *url.URL // scheme and host only
	prefix string
	reg    name.Registry
}

// New builds the client for the logical registry host with the effective
// settings cfg (as returned by (*config.Config).Upstream, defaults filled).
// Credentials named by cfg.Auth are read now to fail fast, and again at
// each token exchange so that rotated secrets are picked up.
func New(host string, cfg config.Upstream, opts ...Option) (*Client, error) {
	o := defaultOptions()
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return nil, err
		}
	}
	if host == "" {
		return nil, errors.New("upstream: empty host")
	}
	if len(cfg.Endpoints) == 0 {
		return nil, fmt.Errorf("upstream %s: no endpoints", host)
	}
	cfg.Timeouts = cfg.Timeouts.WithDefaults()
	cfg.Retry = cfg.Retry.WithDefaults()
	eps := make([]*endpoint, 0, len(cfg.Endpoints))
	for _, e := range cfg.Endpoints {
		ep, err := parseEndpoint(e)
		if err != nil {
			return nil, fmt.Errorf("upstream %s: %w", host, err)
		}
		eps = append(eps, ep)
	}
	creds, err := newCredentials(host, cfg.Auth)
	if err != nil {
		return nil, err
	}
	auth := authn.Anonymous
	if creds != nil {
		auth = creds
	}
	base, proxy, err := newBaseTransport(cfg)
	if err != nil {
		return nil, fmt.Errorf("upstream %s: %w", host, err)
	}
	if cfg.Limits.Bandwidth < 0 || cfg.Limits.Connections < 0 {
		return nil, fmt.Errorf("upstream %s: limits must not be negative", host)
	}
	budget := o.budget
	if budget == nil {
		if budget, err = NewBudget(config.Link{}); err != nil {
			return nil, err
		}
	}
	c := &Client{host: host, endpoints: eps, cfg: cfg, opts: o, base: base}
	c.limits = newLimits(host, cfg.Limits, budget, proxy)
	c.red = redactor{secrets: func() []string { return append(creds.secrets(), proxySecrets(cfg.Proxy)...) }}
	c.log = o.logger.With(slog.String("upstream", host))

	ua := &userAgent{inner: &proxyAnswers{inner: base}, ua: o.userAgent}
	authBudget := cfg.Timeouts.Dial + cfg.Timeouts.TLSHandshake + 2*cfg.Timeouts.ResponseHeader
	at, err := newAuthTransport(ua, eps, auth, cfg.Internal, o.scopeCacheSize, authBudget)
	if err != nil {
		return nil, err
	}
	c.auth = at
	rt := &retryTransport{inner: at, policy: cfg.Retry, sleep: o.sleep, log: c.log, red: c.red, now: time.Now}
	rp := &redirectPolicy{max: o.maxRedirects, internal: cfg.Internal, proxy: proxy, resolver: net.DefaultResolver}
	c.http = &http.Client{Transport: rt, CheckRedirect: rp.check}
	return c, nil
}

// Host is the logical registry host (the cache key prefix).
func (c *Client) Host() string { return c.host }

// Close releases idle connections.
func (c *Client) Close() error {
	c.base.CloseIdleConnections()
	return nil
}

func parseEndpoint(s string) (*endpoint, error) {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil {
		return nil, fmt.Errorf("endpoint %q must be an http:// or https:// URL without credentials", s)
	}
	var ro []name.Option
	if u.Scheme == "http" {
		ro = append(ro, name.Insecure)
	}
	reg, err := name.NewRegistry(u.Host, ro...)
	if err != nil {
		return nil, fmt.Errorf("endpoint %q: %w", s, err)
	}
	return &endpoint{
		base:   &url.URL{Scheme: u.Scheme, Host: u.Host},
		prefix: strings.Trim(u.Path, "/"),
		reg:    reg,
	}, nil
}

func proxySecrets(proxy string) []string {
	u, err := url.Parse(proxy)
	if err != nil || u.User == nil {
		return nil
	}
	var out []string
	if p, ok := u.User.Password(); ok && p != "" {
		out = append(out, p)
	}
	return out
}

// request describes one registry call, independent of the endpoint.
type request struct {
	method string
	repo   string
	path   string // after /v2/<repo>/
	query  url.Values
	header http.Header
	// once: no retries (the caller retries: blob GETs and the fill).
	once bool
}

// response is an answered request; body reads are guarded by the stall
// timer and Close releases the request.
type response struct {
	*http.Response
	endpoint *endpoint
}

// do sends r to the endpoints in order and returns the first successful
// (2xx) answer. It moves to the next endpoint when one fails with
// ErrUnavailable (network errors, 408, 5xx, after its retries),
// ErrTooManyRequests or ErrNotFound (a mirror without the repository);
// other answers (401, 403, bad requests) are final. When every endpoint
// failed, a temporary error wins over ErrNotFound, because the content may
// exist behind the endpoint that did not answer.
//
// Retry.Attempts bounds the requests of the whole call: the endpoints share
// it, each keeping one for itself. A request marked once (blob GETs, whose
// retries and resumes are the fill's) is sent once per endpoint.
func (c *Client) do(ctx context.Context, r request) (*response, error) {
	var errs []error
	left := c.cfg.Retry.Attempts
	for i, ep := range c.endpoints {
		allow := max(1, left-(len(c.endpoints)-1-i))
		if r.once {
			allow = 1
		}
		b := &attemptBudget{left: allow}
		resp, err := c.doEndpoint(withBudget(ctx, b), ep, r)
		left -= allow - b.remaining() // what this endpoint sent
		if err == nil {
			return resp, nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil || (!Temporary(err) && !errors.Is(err, ErrNotFound)) {
			break
		}
		if i+1 < len(c.endpoints) {
			c.log.LogAttrs(ctx, slog.LevelDebug, "upstream endpoint failed, trying next",
				slog.String("endpoint", c.red.URL(ep.base)), slog.String("error", err.Error()))
		}
	}
	for _, err := range errs {
		if Temporary(err) {
			return nil, err
		}
	}
	return nil, errs[len(errs)-1]
}

func (c *Client) doEndpoint(ctx context.Context, ep *endpoint, r request) (*response, error) {
	repo := r.repo
	if ep.prefix != "" {
		repo = ep.prefix + "/" + repo
	}
	u := *ep.base
	u.Path = "/v2/" + repo + "/" + r.path
	u.RawQuery = r.query.Encode()
	rctx, cancel := context.WithCancel(ctx)
	req, err := http.NewRequestWithContext(rctx, r.method, u.String(), nil)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("%w: %s", ErrInvalid, c.red.String(err.Error()))
	}
	for k, v := range r.header {
		req.Header[k] = v
	}
	// The connection slot is held from here until the body is closed.
	release, err := c.limits.acquire(rctx)
	if err != nil {
		cancel()
		return nil, c.red.Error(fmt.Errorf("upstream %s: waiting for a connection slot: %w", c.host, err))
	}
	early := c.limits.early(ctx, req)
	defer early()
	resp, err := c.http.Do(req)
	if err != nil {
		release()
		cancel()
		if ctx.Err() != nil {
			return nil, c.red.Error(fmt.Errorf("upstream %s: %w", c.host, ctx.Err()))
		}
		return nil, c.failed(ctx, req, fmt.Errorf("upstream %s: %s %s/%s: %w", c.host, r.method, r.repo, r.path, networkError(fromTransportError(err))))
	}
	c.observeRateLimit(resp.Header)
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		se := errorFromResponse(resp, time.Now())
		release()
		cancel()
		return nil, c.failed(ctx, req, fmt.Errorf("upstream %s: %s %s/%s: %w", c.host, r.method, r.repo, r.path, se))
	}
	resp.Body = newStallReader(resp.Body, c.cfg.Timeouts.Stall, cancel)
	resp.Body = c.limits.wrap(ctx, resp, release)
	return &response{Response: resp, endpoint: ep}, nil
}

// failed redacts err and logs it at debug level.
func (c *Client) failed(ctx context.Context, req *http.Request, err error) error {
	err = c.red.Error(err)
	c.log.LogAttrs(ctx, slog.LevelDebug, "upstream request failed",
		slog.String("method", req.Method), slog.String("url", c.red.URL(req.URL)),
		slog.String("error", err.Error()))
	return err
}
