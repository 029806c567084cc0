package config

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"time"
)

// namespacePattern: what a redis.namespace may hold (it becomes part of
// every key and of a pub/sub channel name).
var namespacePattern = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

func validateRedisNamespace(ns string) []error {
	if ns == "" || namespacePattern.MatchString(ns) {
		return nil
	}
	return []error{fmt.Errorf("redis.namespace %q: want 1 to 64 of A-Z a-z 0-9 . _ -", ns)}
}

// RedisNamespace is the namespace of this cache's keys in Redis:
// redis.namespace when set, else a short hash of the storage the replicas
// share — the filesystem root's absolute path, or the S3 bucket, endpoint,
// region and root directory — so that the replicas of one cache agree on it
// and two caches on different storage never share a key. The in-memory
// driver shares nothing: its namespace is this process's own (host name
// and process id), so that it never waits on another process's lease.
func (c *Config) RedisNamespace() string {
	if c.Redis.Namespace != "" {
		return c.Redis.Namespace
	}
	var id string
	switch c.Storage.Driver {
	case "inmemory":
		host, _ := os.Hostname()
		id = "inmemory\x00" + host + "\x00" + strconv.Itoa(os.Getpid())
	case "s3":
		s := func(k string) string { v, _ := c.Storage.S3[k].(string); return v }
		id = "s3\x00" + s("bucket") + "\x00" + s("regionendpoint") + "\x00" + s("region") + "\x00" + filepath.Clean("/"+s("rootdirectory"))
	default:
		root := c.Storage.Root
		if abs, err := filepath.Abs(root); err == nil {
			root = abs
		}
		id = "fs\x00" + filepath.Clean(root)
	}
	sum := sha256.Sum256([]byte(id))
	return hex.EncodeToString(sum[:6])
}

// RedisPrefix is what every key of this cache in Redis starts with:
// "stowage:<namespace>:".
func (c *Config) RedisPrefix() string { return "stowage:" + c.RedisNamespace() + ":" }

// DefaultLeaseTTL is redis.lease_ttl's default: short, so that a replica
// takes over a dead owner's fill before a client notices.
const DefaultLeaseTTL = 5 * time.Second

// MinLeaseTTL is the shortest redis.lease_ttl accepted.
const MinLeaseTTL = time.Second

// validateLeaseTTL: at least MinLeaseTTL, and long enough that one renewal
// (every lease_ttl/3) may time out without the lease expiring.
func validateLeaseTTL(r Redis) []error {
	switch {
	case r.Addr == "":
		return nil // no leases
	case r.LeaseTTL < MinLeaseTTL:
		return []error{fmt.Errorf("redis.lease_ttl %s: want at least %s", r.LeaseTTL, MinLeaseTTL)}
	case r.LeaseTTL < 3*r.Timeout:
		return []error{fmt.Errorf("redis.lease_ttl %s: want at least 3x redis.timeout (%s), so a renewal may time out once", r.LeaseTTL, 3*r.Timeout)}
	}
	return nil
}
