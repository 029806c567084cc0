package config

import (
	"errors"
	"time"
)

// Server holds the limits of the client-facing HTTP server and how it
// shuts down.
type Server struct {
	// WriteIdleTimeout cuts a response whose client has not taken any
	// bytes for this long (default 60s): a client that stops reading
	// cannot pin a socket and an open file. Every successful write
	// extends the deadline.
	WriteIdleTimeout time.Duration `yaml:"write_idle_timeout"`
	// ShutdownTimeout bounds the graceful part of a shutdown (SIGTERM):
	// the server stops accepting, then waits this long (default 30s) for
	// running responses and fills before cutting them.
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"`
	// MaxHeaderBytes caps a request's header size (default 64 KiB).
	MaxHeaderBytes int `yaml:"max_header_bytes"`
	// MaxAdminJobs caps the prefetch jobs the admin API holds queued or
	// running (default 16); past it a new job is refused with 429. With
	// Redis the jobs are shared by the replicas and the cap is the
	// cluster's.
	MaxAdminJobs int `yaml:"max_admin_jobs"`
}

// ServerTLS serves HTTPS with a certificate and key read from PEM files. The
// files are re-read when they change (as cert-manager rotates a Secret),
// without a restart.
type ServerTLS struct {
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// Enabled reports whether TLS is configured.
func (t ServerTLS) Enabled() bool { return t.CertFile != "" && t.KeyFile != "" }

// ClientAuth configures client authentication.
type ClientAuth struct {
	// Htpasswd is a file of "user:bcrypt-hash" lines (htpasswd -B). When
	// set, every registry request needs HTTP Basic credentials from it;
	// /healthz, /readyz and /metrics stay open for probes. The file is
	// re-read when it changes.
	Htpasswd string `yaml:"htpasswd"`
	// Realm is the Basic realm announced in WWW-Authenticate (default
	// "stowage").
	Realm string `yaml:"realm"`
}

// Serving defaults.
const (
	DefaultMaxConcurrentFills = 64
	DefaultWriteIdleTimeout   = 60 * time.Second
	DefaultShutdownTimeout    = 30 * time.Second
	DefaultMaxHeaderBytes     = 64 << 10
	DefaultMaxAdminJobs       = 16
)

// DefaultServer returns the server defaults.
func DefaultServer() Server {
	return Server{
		WriteIdleTimeout: DefaultWriteIdleTimeout,
		ShutdownTimeout:  DefaultShutdownTimeout,
		MaxHeaderBytes:   DefaultMaxHeaderBytes,
		MaxAdminJobs:     DefaultMaxAdminJobs,
	}
}

func (c *Config) validateServing() []error {
	var errs []error
	s := c.Server
	if s.WriteIdleTimeout < time.Second || s.ShutdownTimeout < 0 {
		errs = append(errs, errors.New("server.write_idle_timeout must be at least 1s and server.shutdown_timeout not negative"))
	}
	if s.MaxHeaderBytes < 4096 {
		errs = append(errs, errors.New("server.max_header_bytes must be at least 4096"))
	}
	if s.MaxAdminJobs < 1 {
		errs = append(errs, errors.New("server.max_admin_jobs must be at least 1"))
	}
	if (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") {
		errs = append(errs, errors.New("tls: cert_file and key_file go together"))
	}
	if c.Cache.Fill.MaxConcurrent < 0 {
		errs = append(errs, errors.New("cache.fill.max_concurrent must not be negative"))
	}
	if c.Auth.Realm == "" {
		c.Auth.Realm = "stowage"
	}
	return errs
}
