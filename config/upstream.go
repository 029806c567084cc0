package config

import (
	"fmt"
	"slices"
	"time"
)

// Upstream describes one logical upstream registry. The map key in
// Config.Upstreams is its registry host, which is also the cache key prefix.
type Upstream struct {
	// Endpoints are base URLs tried in order, e.g. an internal Harbor mirror
	// first and the public registry second. "http://" means plain HTTP.
	// Empty for a preset host means the preset's public endpoint.
	Endpoints []string `yaml:"endpoints"`

	// Auth holds the credentials for this upstream. Empty means anonymous.
	Auth Auth `yaml:"auth"`

	// Proxy is the HTTP(S) forward proxy URL for this upstream, e.g.
	// "http://user:pass@proxy.corp:3128". Empty means the standard
	// HTTPS_PROXY / HTTP_PROXY / NO_PROXY environment; "direct" means none.
	Proxy string `yaml:"proxy"`
	// NoProxy lists hosts, domains (".corp") and CIDRs reached without the
	// proxy, overriding Proxy for those hosts.
	NoProxy []string `yaml:"no_proxy"`

	// TLS configures certificate checks for HTTPS endpoints.
	TLS TLS `yaml:"tls"`

	// Internal allows connections to loopback, private and link-local
	// addresses other than the endpoints themselves: blob redirects, or a
	// token realm on another internal host (an upstream that lives on the
	// internal network). Without it such targets are refused, checked
	// again at connect time when no forward proxy is used.
	Internal bool `yaml:"internal"`

	// Timeouts bound each phase of an upstream request. No timeout applies
	// to a blob body that keeps moving.
	Timeouts Timeouts `yaml:"timeouts"`

	// Retry bounds retries of temporary failures.
	Retry Retry `yaml:"retry"`

	// Limits caps the bandwidth and concurrent requests of this upstream.
	Limits Limits `yaml:"limits"`

	// Disabled turns this upstream off: requests naming it are refused
	// (403 DENIED) and it is never contacted. It closes one preset (for
	// example "nvcr.io: {disabled: true}") or parks a configured entry.
	Disabled bool `yaml:"disabled"`
}

// Auth holds upstream credentials. Secrets are never printed: String and the
// YAML output of Redacted() mask them.
type Auth struct {
	// Username and Password are literal credentials (prefer the _env or
	// _file forms so that secrets stay out of config files).
	Username string `yaml:"username"`
	Password string `yaml:"password"`
	// UsernameEnv and PasswordEnv name environment variables to read.
	UsernameEnv string `yaml:"username_env"`
	PasswordEnv string `yaml:"password_env"`
	// PasswordFile is a file holding the password or token, e.g. a mounted
	// Kubernetes Secret. Trailing newlines are ignored.
	PasswordFile string `yaml:"password_file"`
	// DockerConfig is the path of a Docker config.json whose "auths" entry
	// for this registry (with "auth" or "username"/"password") is used.
	DockerConfig string `yaml:"docker_config"`
}

// TLS configures certificate verification for one upstream.
type TLS struct {
	// CAFile is a PEM bundle of extra CAs trusted for this upstream.
	CAFile string `yaml:"ca_file"`
	// CertFile and KeyFile are a client certificate for mutual TLS.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// CertDir is a directory in the layout of /etc/docker/certs.d/<host>
	// and /etc/containers/certs.d/<host> (skopeo's cert-dir): every *.crt
	// is a CA added to the trusted roots, every *.cert a client certificate
	// whose key is the *.key of the same base name.
	CertDir string `yaml:"cert_dir"`
	// InsecureSkipVerify disables certificate verification. Use only for
	// testing; prefer CAFile.
	InsecureSkipVerify bool `yaml:"insecure_skip_verify"`
}

// Timeouts bound the phases of an upstream request.
type Timeouts struct {
	// Dial bounds establishing a TCP connection (to the upstream or proxy).
	Dial time.Duration `yaml:"dial"`
	// TLSHandshake bounds the TLS handshake.
	TLSHandshake time.Duration `yaml:"tls_handshake"`
	// ResponseHeader bounds the wait for response headers after a request.
	ResponseHeader time.Duration `yaml:"response_header"`
	// Stall aborts a body that delivers no byte for this long; a body that
	// keeps moving is never cut.
	Stall time.Duration `yaml:"stall"`
}

// Retry bounds retries of temporary failures (connection errors, 408, 429,
// 5xx) with exponential backoff and jitter; Retry-After is honoured up to
// MaxBackoff. There is one retry layer per kind of request: the upstream
// client retries metadata requests (manifests, HEADs, tags, referrers,
// token fetches); blob downloads are not retried by the client but by the
// fill, which resumes from the bytes it already has.
type Retry struct {
	// Attempts is the total number of requests of one metadata call,
	// across all endpoints (each endpoint is tried at least once); the blob
	// fill uses it to bound its own download attempts (>= 1).
	Attempts int `yaml:"attempts"`
	// InitialBackoff is the first wait; it doubles on each retry.
	InitialBackoff time.Duration `yaml:"initial_backoff"`
	// MaxBackoff caps a single wait. An upstream whose Retry-After asks for
	// more is not waited for: its 429 or 503 is passed on at once, with its
	// Retry-After, so the client decides when to come back.
	MaxBackoff time.Duration `yaml:"max_backoff"`
}

// Presets are the public registries Stowage knows without configuration,
// keyed by registry host, with their endpoint URL: docker.io, ghcr.io,
// quay.io, registry.k8s.io, gcr.io, mcr.microsoft.com, public.ecr.aws,
// docker.elastic.co, nvcr.io and registry.gitlab.com. Config.Presets false
// turns them all off; Upstream.Disabled turns off one.
func Presets() map[string]string {
	return map[string]string{
		"docker.io":           "https://registry-1.docker.io",
		"ghcr.io":             "https://ghcr.io",
		"quay.io":             "https://quay.io",
		"registry.k8s.io":     "https://registry.k8s.io",
		"gcr.io":              "https://gcr.io",
		"mcr.microsoft.com":   "https://mcr.microsoft.com",
		"public.ecr.aws":      "https://public.ecr.aws",
		"docker.elastic.co":   "https://docker.elastic.co",
		"nvcr.io":             "https://nvcr.io",
		"registry.gitlab.com": "https://registry.gitlab.com",
	}
}

// CanonicalHost maps the aliases of a registry to its one cache key: the
// three names of Docker Hub are one upstream.
func CanonicalHost(host string) string {
	switch host {
	case "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com":
		return "docker.io"
	}
	return host
}

// Upstream returns the effective settings for a registry host (after
// CanonicalHost): the configured entry over the preset. ok is false for a
// host that is not enabled: neither configured nor an enabled preset
// (presets: false turns every preset off), or disabled: true. Such a host
// must never be contacted. A configured entry for a preset host is enabled
// even with presets: false, and still defaults to the preset's endpoint.
func (c *Config) Upstream(host string) (Upstream, bool) {
	host = CanonicalHost(host)
	u, configured := c.Upstreams[host]
	preset, isPreset := Presets()[host]
	if u.Disabled || (!configured && (!isPreset || !c.Presets)) {
		return Upstream{}, false
	}
	if len(u.Endpoints) == 0 && isPreset {
		u.Endpoints = []string{preset}
	}
	u.Timeouts = u.Timeouts.WithDefaults()
	u.Retry = u.Retry.WithDefaults()
	return u, true
}

// Hosts lists every registry host that may be contacted (the enabled
// ones), sorted.
func (c *Config) Hosts() []string {
	var out []string
	for h := range Presets() {
		if _, ok := c.Upstream(h); ok {
			out = append(out, h)
		}
	}
	for h := range c.Upstreams {
		if _, preset := Presets()[h]; !preset {
			if _, ok := c.Upstream(h); ok {
				out = append(out, h)
			}
		}
	}
	slices.Sort(out)
	return out
}

// WithDefaults fills unset (zero or negative) fields from DefaultTimeouts.
func (t Timeouts) WithDefaults() Timeouts {
	d := DefaultTimeouts()
	if t.Dial <= 0 {
		t.Dial = d.Dial
	}
	if t.TLSHandshake <= 0 {
		t.TLSHandshake = d.TLSHandshake
	}
	if t.ResponseHeader <= 0 {
		t.ResponseHeader = d.ResponseHeader
	}
	if t.Stall <= 0 {
		t.Stall = d.Stall
	}
	return t
}

// WithDefaults fills unset (zero or negative) fields from DefaultRetry.
func (r Retry) WithDefaults() Retry {
	d := DefaultRetry()
	if r.Attempts <= 0 {
		r.Attempts = d.Attempts
	}
	if r.InitialBackoff <= 0 {
		r.InitialBackoff = d.InitialBackoff
	}
	if r.MaxBackoff <= 0 {
		r.MaxBackoff = d.MaxBackoff
	}
	return r
}

// String masks the secrets.
func (a Auth) String() string {
	pw := ""
	if a.Password != "" {
		pw = "***"
	}
	return fmt.Sprintf("{username:%q password:%s username_env:%q password_env:%q password_file:%q docker_config:%q}",
		a.Username, pw, a.UsernameEnv, a.PasswordEnv, a.PasswordFile, a.DockerConfig)
}

// GoString masks the secrets in %#v output too.
func (a Auth) GoString() string { return "config.Auth" + a.String() }
