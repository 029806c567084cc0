package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"
)

// Default returns the embedded defaults: listen on :5000, cache under
// ./data on the filesystem, docker.io as the default upstream, the preset
// public registries reachable through the standard proxy environment.
func Default() *Config {
	return &Config{
		Listen:          ":5000",
		Storage:         Storage{Driver: "filesystem", Root: "./data"},
		DefaultUpstream: "docker.io",
		Presets:         true,
		Cache: Cache{
			TagTTL:          5 * time.Minute,
			MaxStale:        7 * 24 * time.Hour,
			TagsListTTL:     time.Minute,
			MemoryEntries:   4096,
			MemoryBytes:     64 << 20,
			MaxManifestSize: 4 << 20,
			Fill: Fill{
				MaxAttempts:       10,
				MaxDownloadFactor: 3,
				MinRate:           1024,
				MinRateWindow:     time.Minute,
				MaxDuration:       6 * time.Hour,
				AbandonAfter:      5 * time.Minute,
				MaxConcurrent:     DefaultMaxConcurrentFills,
			},
			EvictGrace: DefaultEvictGrace,
		},
		Log:      Log{Format: "json", Level: "info"},
		Redis:    Redis{Timeout: 500 * time.Millisecond, LeaseTTL: DefaultLeaseTTL},
		Prefetch: Prefetch{Concurrency: 4},
		Link:     Link{PrefetchShare: 30},
		Server:   DefaultServer(),
	}
}

// DefaultTimeouts are the per-phase upstream timeouts used when a field is
// left at zero.
func DefaultTimeouts() Timeouts {
	return Timeouts{
		Dial:           10 * time.Second,
		TLSHandshake:   10 * time.Second,
		ResponseHeader: 30 * time.Second,
		Stall:          60 * time.Second,
	}
}

// DefaultRetry is the retry budget used when a field is left at zero.
func DefaultRetry() Retry {
	return Retry{Attempts: 4, InitialBackoff: 200 * time.Millisecond, MaxBackoff: 10 * time.Second}
}

// Validate reports every problem in the configuration at once.
func (c *Config) Validate() error {
	var errs []error
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		errs = append(errs, fmt.Errorf("listen %q: %w", c.Listen, err))
	}
	switch c.Storage.Driver {
	case "filesystem":
		if c.Storage.Root == "" {
			errs = append(errs, errors.New("storage.root is required for the filesystem driver"))
		}
	case "inmemory":
	case "s3":
		errs = append(errs, validateS3(c.Storage.S3)...)
	default:
		errs = append(errs, fmt.Errorf("storage.driver %q: want filesystem, s3 or inmemory", c.Storage.Driver))
	}
	if c.Storage.Redirect && c.Storage.Driver != "s3" {
		errs = append(errs, fmt.Errorf("storage.redirect needs an object store (driver s3), not %q", c.Storage.Driver))
	}
	if c.Redis.Timeout < 0 {
		errs = append(errs, errors.New("redis.timeout must not be negative"))
	}
	errs = append(errs, validateRedisNamespace(c.Redis.Namespace)...)
	errs = append(errs, validateLeaseTTL(c.Redis)...)
	c.DefaultUpstream = CanonicalHost(c.DefaultUpstream)
	if _, ok := c.Upstream(c.DefaultUpstream); !ok {
		errs = append(errs, fmt.Errorf("default_upstream %q is not an enabled upstream (configure it under upstreams, or pick an enabled one; presets: false and disabled: true turn presets off)", c.DefaultUpstream))
	}
	for host, u := range c.Upstreams {
		errs = append(errs, validateUpstream(host, u)...)
		errs = append(errs, validateLimits(host, u.Limits)...)
	}
	errs = append(errs, validateLink(c.Link)...)
	if c.Cache.TagTTL < 0 || c.Cache.MaxStale < 0 || c.Cache.TagsListTTL < 0 {
		errs = append(errs, errors.New("cache durations must not be negative"))
	}
	if c.Cache.MemoryBytes < 0 {
		errs = append(errs, errors.New("cache.memory_bytes must not be negative"))
	}
	if c.Cache.MemoryEntries < 1 {
		errs = append(errs, errors.New("cache.memory_entries must be at least 1"))
	}
	if c.Cache.MaxManifestSize < 1024 {
		errs = append(errs, errors.New("cache.max_manifest_size must be at least 1024"))
	}
	if f := c.Cache.Fill; f.MaxAttempts < 1 || f.MaxDownloadFactor < 1 || f.MinRate < 0 ||
		f.MinRateWindow <= 0 || f.MaxDuration <= 0 || f.AbandonAfter <= 0 {
		errs = append(errs, errors.New("cache.fill: max_attempts and max_download_factor must be at least 1, min_rate not negative, the durations positive"))
	}
	errs = append(errs, c.Cache.validateEviction()...)
	switch c.Log.Format {
	case "json", "text":
	default:
		errs = append(errs, fmt.Errorf("log.format %q: want json or text", c.Log.Format))
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		errs = append(errs, fmt.Errorf("log.level %q: want debug, info, warn or error", c.Log.Level))
	}
	errs = append(errs, c.validateCluster()...)
	errs = append(errs, c.validateServing()...)
	if c.Prefetch.Concurrency < 1 {
		errs = append(errs, errors.New("prefetch.concurrency must be at least 1"))
	}
	return errors.Join(errs...)
}

func validateUpstream(host string, u Upstream) []error {
	var errs []error
	if host == "" || strings.ContainsAny(host, "/ ") || CanonicalHost(host) != host {
		errs = append(errs, fmt.Errorf("upstreams: %q is not a canonical registry host", host))
	}
	for _, e := range u.Endpoints {
		p, err := url.Parse(e)
		if err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" {
			errs = append(errs, fmt.Errorf("upstreams.%s: endpoint %q must be an http:// or https:// URL", host, e))
			continue
		}
		if p.User != nil {
			errs = append(errs, fmt.Errorf("upstreams.%s: endpoint must not carry credentials; use auth", host))
		}
	}
	if _, ok := Presets()[host]; !ok && len(u.Endpoints) == 0 && !u.Disabled {
		errs = append(errs, fmt.Errorf("upstreams.%s: endpoints required (not a preset registry)", host))
	}
	if u.Proxy != "" && u.Proxy != "direct" {
		p, err := url.Parse(u.Proxy)
		if err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" {
			// Never echo the value: it may hold a password.
			errs = append(errs, fmt.Errorf("upstreams.%s: proxy must be an http:// or https:// URL or \"direct\"", host))
		}
	}
	if (u.TLS.CertFile == "") != (u.TLS.KeyFile == "") {
		errs = append(errs, fmt.Errorf("upstreams.%s: tls.cert_file and tls.key_file go together", host))
	}
	if u.Retry.Attempts < 0 {
		errs = append(errs, fmt.Errorf("upstreams.%s: retry.attempts must not be negative", host))
	}
	return errs
}
