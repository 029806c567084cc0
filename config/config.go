package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"go.yaml.in/yaml/v3"
)

// Config is the whole Stowage configuration tree. The zero value is not
// useful: start from Default() and overlay a file with Load or LoadFile.
type Config struct {
	// Listen is the address the registry API, /healthz and /metrics listen
	// on, e.g. ":5000" or "127.0.0.1:5000".
	Listen string `yaml:"listen"`

	// Storage selects where the cache lives.
	Storage Storage `yaml:"storage"`

	// DefaultUpstream is the registry host used when a request names no
	// registry (no ?ns= query and no host in the path). Usually "docker.io".
	// It must be an enabled upstream (configured, or an enabled preset).
	DefaultUpstream string `yaml:"default_upstream"`

	// Presets enables the built-in public registries (default true):
	// docker.io, ghcr.io, quay.io, registry.k8s.io, gcr.io,
	// mcr.microsoft.com, public.ecr.aws, docker.elastic.co, nvcr.io and
	// registry.gitlab.com. false turns them all off: only the hosts listed
	// under Upstreams remain (listing a preset host there, even with an
	// empty entry, keeps that one with its public endpoint).
	Presets bool `yaml:"presets"`

	// Upstreams are the registries Stowage may contact, keyed by the logical
	// registry host clients use (the cache key). Entries here are merged
	// over the built-in presets (see Presets); disabled: true turns one
	// off. A host that is neither configured nor an enabled preset is never
	// contacted.
	Upstreams map[string]Upstream `yaml:"upstreams"`

	// Cache holds the cache policy: tag freshness, stale serving, memory.
	Cache Cache `yaml:"cache"`

	// Log controls the structured logger.
	Log Log `yaml:"log"`

	// Redis, when Addr is set, coordinates fills and tag times across
	// replicas that share one storage backend.
	Redis Redis `yaml:"redis"`

	// Cluster configures peer streaming between replicas (the internal
	// listener and its shared secret).
	Cluster Cluster `yaml:"cluster"`

	// Admin protects the admin API (/api/v1/...).
	Admin Admin `yaml:"admin"`

	// Prefetch lists images to keep warm.
	Prefetch Prefetch `yaml:"prefetch"`

	// Link budgets the bandwidth of each forward proxy shared by several
	// upstreams, and the share prefetch may take of it while clients wait.
	Link Link `yaml:"link"`

	// Server holds the client-facing HTTP server's limits and shutdown.
	Server Server `yaml:"server"`

	// TLS, when both files are set, serves HTTPS on Listen.
	TLS ServerTLS `yaml:"tls"`

	// Auth, when htpasswd is set, requires HTTP Basic credentials from
	// registry clients.
	Auth ClientAuth `yaml:"auth"`

	// UI configures the web dashboard (/ui/).
	UI UI `yaml:"ui"`
}

// Storage selects the cache backend.
type Storage struct {
	// Driver is a distribution storage driver name: "filesystem" (default)
	// or "inmemory" (tests; content is lost on exit).
	Driver string `yaml:"driver"`
	// Root is the cache directory for the filesystem driver. The layout
	// below it is the distribution registry's, so a stock registry pointed
	// at the same directory serves the cached images.
	Root string `yaml:"root"`
	// S3 holds the parameters of distribution's s3-aws driver under its
	// own names (bucket, region, regionendpoint, forcepathstyle, accesskey,
	// secretkey, rootdirectory, encrypt, secure, skipverify, chunksize,
	// ...), so the storage.s3 section of a distribution registry's config
	// carries over unchanged. The secrets may also come from a file
	// (accesskey_file, secretkey_file) or an environment variable
	// (accesskey_env, secretkey_env); with none of them the AWS SDK's
	// standard chain applies (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY,
	// the shared credentials file, an IAM role). Used by driver "s3".
	S3 map[string]any `yaml:"s3"`
	// Redirect answers GETs of cached blobs with a redirect to a presigned
	// URL of the object store (driver "s3"), so clients download from the
	// bucket directly. Off by default: nodes behind a corporate network
	// often cannot reach the bucket.
	Redirect bool `yaml:"redirect"`
}

// Cache is the cache policy.
type Cache struct {
	// TagTTL is how long a manifest fetched by tag is served without asking
	// the upstream. After it, the tag is revalidated with a HEAD request
	// (cheap, and not counted by Docker Hub's pull limit). Default 5m:
	// short enough that a re-pushed "latest" is seen within minutes, long
	// enough that a rollout of hundreds of nodes costs one HEAD per tag.
	TagTTL time.Duration `yaml:"tag_ttl"`
	// MaxStale bounds how long past its TTL a tag may still be served when
	// the upstream fails or is unreachable. Default 168h (7 days): long
	// enough to ride out a weekend-long outage or a broken forward proxy,
	// short enough that a persistent failure (an intercepting proxy, an
	// expired credential) shows up as errors within a week instead of a tag
	// frozen forever. 0 means no bound: set it on a disconnected (air-gapped)
	// cache whose tags come from `proxy import`.
	MaxStale time.Duration `yaml:"max_stale"`
	// TagsListTTL is how long an upstream tags/list answer is reused.
	TagsListTTL time.Duration `yaml:"tags_list_ttl"`
	// MemoryEntries bounds the number of manifests and of tag resolutions
	// kept in the in-process LRUs in front of storage. Manifests are also
	// bounded in bytes by MemoryBytes; tag resolutions live a few seconds
	// and are then read from disk again.
	MemoryEntries int `yaml:"memory_entries"`
	// MemoryBytes bounds the manifest bodies kept in memory, in bytes
	// (default 64 MiB; 0 keeps none).
	MemoryBytes int64 `yaml:"memory_bytes"`
	// MaxManifestSize is the largest manifest accepted from an upstream or
	// read from storage (a larger stored object is not a manifest).
	MaxManifestSize int64 `yaml:"max_manifest_size"`
	// Fill bounds every blob download (a fill), so that each one ends.
	Fill Fill `yaml:"fill"`

	// MaxSize caps the bytes of cached blobs (layers, configs and
	// manifests), e.g. "200GiB" or "500GB"; 0 means no cap. Past it,
	// eviction removes least recently used blobs down to 90% of the cap.
	// With Redis the cap is for the whole cache (every replica on the
	// storage), and one replica at a time evicts.
	MaxSize ByteSize `yaml:"max_size"`
	// MinFree keeps this much of the cache's filesystem free: a share
	// ("10%") or a size ("20GiB"); 0 means no floor. Below it, eviction
	// frees space until 10% more than MinFree is free.
	MinFree FreeSpace `yaml:"min_free"`
	// EvictAfter removes blobs nobody used for this long, even under the
	// cap (e.g. 720h); 0 means never.
	EvictAfter Duration `yaml:"evict_after"`
	// EvictGrace protects content used (or cached) this recently from
	// eviction and from "proxy gc". Default 10m; at least 1m.
	EvictGrace time.Duration `yaml:"evict_grace"`
	// VerifySample is the share of cache hits whose blob is re-hashed in
	// the background after it was served (0 to 1; default 0: none). A blob
	// that fails is removed, so the next pull fetches it again.
	VerifySample float64 `yaml:"verify_sample"`
}

// Fill bounds a blob fill. The upstream's retry.attempts counts attempts
// without progress; these bound the fill as a whole.
type Fill struct {
	// MaxAttempts bounds the upstream requests of one fill, with or
	// without progress.
	MaxAttempts int `yaml:"max_attempts"`
	// MaxDownloadFactor bounds the bytes one fill downloads to this
	// multiple of the blob size (plus 1 MiB): restarts from zero cannot
	// loop forever.
	MaxDownloadFactor int `yaml:"max_download_factor"`
	// MinRate (bytes per second, averaged over MinRateWindow) is the
	// slowest an attempt may run: a slower one is cut and resumed, which
	// also moves a crawling fill onto an upstream that recovered. 0
	// disables the check.
	MinRate int64 `yaml:"min_rate"`
	// MinRateWindow is the period MinRate is measured over.
	MinRateWindow time.Duration `yaml:"min_rate_window"`
	// MaxDuration is a fill's overall deadline.
	MaxDuration time.Duration `yaml:"max_duration"`
	// AbandonAfter: a fill that no client and no prefetch wants any more
	// stops at its next retry, or after this long unwanted. A client
	// leaving halfway thus still lets a healthy fill commit.
	AbandonAfter time.Duration `yaml:"abandon_after"`
	// MaxConcurrent caps the fills running at once (default 64). A client
	// asking for a blob that would start one more is answered 503 with
	// Retry-After; joining a fill that already runs is always allowed.
	// 0 means no cap.
	MaxConcurrent int `yaml:"max_concurrent"`
}

// Log configures log/slog output.
type Log struct {
	// Format is "json" (default) or "text".
	Format string `yaml:"format"`
	// Level is "debug", "info" (default), "warn" or "error".
	Level string `yaml:"level"`
}

// Redis configures optional cluster coordination.
type Redis struct {
	// Addr is host:port of the Redis server; empty disables Redis.
	Addr string `yaml:"addr"`
	// PasswordEnv names an environment variable holding the password.
	PasswordEnv string `yaml:"password_env"`
	// DB is the Redis database number.
	DB int `yaml:"db"`
	// Timeout bounds each Redis operation: connecting, and waiting for
	// an answer (default 500ms). A Redis that does not answer within it
	// counts as down: the replica coordinates its fills locally for a
	// while (a circuit breaker) instead of waiting on every blob.
	Timeout time.Duration `yaml:"timeout"`
	// Namespace is put in front of every key this cache keeps in Redis
	// (leases, budget, tag times, the retag channel), so that several
	// independent caches can share one Redis database. Empty: derived from
	// the storage the replicas share (RedisNamespace), so that replicas of
	// one cache agree on it without configuration and two caches never do.
	Namespace string `yaml:"namespace"`
	// LeaseTTL is how long a blob fill's lease outlives its owner's last
	// renewal (renewed every LeaseTTL/3 while the download runs). When the
	// owner dies, another replica takes the fill over after at most this
	// long, resuming from the bytes it already has or the dead owner
	// staged (default 5s; at least 1s and 3x timeout, so that a renewal
	// can fail once without losing the lease).
	LeaseTTL time.Duration `yaml:"lease_ttl"`
}

// Admin configures the admin API.
type Admin struct {
	// TokenEnv names an environment variable holding the bearer token the
	// admin API requires. Without a token the admin API is disabled.
	TokenEnv string `yaml:"token_env"`
	// TokenFile is a file (e.g. a mounted Kubernetes Secret) holding the
	// token; used when TokenEnv is empty.
	TokenFile string `yaml:"token_file"`
}

// Prefetch lists images to load ahead of use.
type Prefetch struct {
	// Lists are image-list files (images-list.txt or skopeo-sync YAML).
	Lists []string `yaml:"lists"`
	// Images are references written inline, e.g. "ghcr.io/org/app:v1".
	Images []string `yaml:"images"`
	// Platforms filters image indexes, e.g. ["linux/amd64"]; empty = all.
	Platforms []string `yaml:"platforms"`
	// Schedule is a cron expression that re-runs the prefetch (empty: never).
	Schedule string `yaml:"schedule"`
	// Concurrency bounds parallel blob fetches of a prefetch run.
	Concurrency int `yaml:"concurrency"`
}

// Load reads a YAML document and overlays it onto Default(). Unknown fields
// are errors. The result is validated.
func Load(r io.Reader) (*Config, error) {
	cfg := Default()
	data, err := io.ReadAll(io.LimitReader(r, 4<<20))
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	if len(bytes.TrimSpace(data)) > 0 {
		// Decoding over the defaults keeps every field the file leaves out.
		dec := yaml.NewDecoder(bytes.NewReader(data))
		dec.KnownFields(true)
		if err := dec.Decode(cfg); err != nil && !errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("parse config: %w", err)
		}
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return cfg, nil
}

// LoadFile is Load on a file.
func LoadFile(path string) (*Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open config: %w", err)
	}
	defer f.Close()
	cfg, err := Load(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return cfg, nil
}
