package upstream

import (
	"context"
	"errors"
	"log/slog"
	"time"
)

// Option configures a Client.
type Option func(*options) error

type options struct {
	logger          *slog.Logger
	userAgent       string
	maxManifestSize int64
	rateLimit       func(host string, limit, remaining int)
	sleep           func(ctx context.Context, d time.Duration) error
	scopeCacheSize  int
	maxRedirects    int
	budget          *Budget
}

func defaultOptions() options {
	return options{
		logger:          slog.New(slog.DiscardHandler),
		userAgent:       "stowage/dev",
		maxManifestSize: 4 << 20,
		sleep:           sleepContext,
		scopeCacheSize:  1024,
		maxRedirects:    5,
	}
}

// WithLogger sets the logger for retries and auth events. Every URL it logs
// is redacted (no query strings, no credentials).
func WithLogger(l *slog.Logger) Option {
	return func(o *options) error {
		if l == nil {
			return errors.New("upstream: nil logger")
		}
		o.logger = l
		return nil
	}
}

// WithUserAgent sets the User-Agent header, e.g. "stowage/1.2.3".
func WithUserAgent(ua string) Option {
	return func(o *options) error {
		if ua == "" {
			return errors.New("upstream: empty user agent")
		}
		o.userAgent = ua
		return nil
	}
}

// WithMaxManifestSize caps manifest bodies (default 4 MiB, as
// config.Cache.MaxManifestSize); larger manifests fail with ErrTooLarge.
func WithMaxManifestSize(n int64) Option {
	return func(o *options) error {
		if n < 1024 {
			return errors.New("upstream: max manifest size must be at least 1024")
		}
		o.maxManifestSize = n
		return nil
	}
}

// WithRateLimitObserver calls fn with the logical host and the values of
// Docker Hub's ratelimit-limit and ratelimit-remaining headers ("100;w=21600"
// gives 100) whenever a response carries them, so the caller can export
// metrics. fn must be fast and safe for concurrent use.
func WithRateLimitObserver(fn func(host string, limit, remaining int)) Option {
	return func(o *options) error {
		o.rateLimit = fn
		return nil
	}
}

// WithSleep replaces the wait between retries (default: a timer honouring
// ctx). Tests use it to observe backoff and Retry-After without waiting.
func WithSleep(fn func(ctx context.Context, d time.Duration) error) Option {
	return func(o *options) error {
		if fn == nil {
			return errors.New("upstream: nil sleep")
		}
		o.sleep = fn
		return nil
	}
}

// WithScopeCacheSize sets how many authenticated repository scopes (one
// token each) are kept (default 1024).
func WithScopeCacheSize(n int) Option {
	return func(o *options) error {
		if n < 1 {
			return errors.New("upstream: scope cache size must be at least 1")
		}
		o.scopeCacheSize = n
		return nil
	}
}

// WithBudget makes the client draw on b, the process's bandwidth budget
// shared by all upstream clients (link caps and the prefetch share).
// Without it the client enforces only its own config.Limits, per process.
func WithBudget(b *Budget) Option {
	return func(o *options) error {
		if b == nil {
			return errors.New("upstream: nil budget")
		}
		o.budget = b
		return nil
	}
}

func sleepContext(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
