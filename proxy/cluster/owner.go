package cluster

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/redis/go-redis/v9"
)

// A lease's value is the owner's id, followed by a space and the URL of its
// internal endpoint when it advertises one: "<id> <url>". Renewal and
// release compare the whole value, so they need no change.

// Advertise records url, this replica's internal endpoint (cluster.advertise),
// in every lease it takes from now on, so that other replicas can stream a
// fill from it while it downloads. Call it before the leases are used.
func (l *RedisLeases) Advertise(rawURL string) error {
	u, err := url.Parse(rawURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || strings.ContainsAny(rawURL, " \t\n") {
		return fmt.Errorf("cluster: advertised URL %q: want http(s)://host:port", rawURL)
	}
	id, _, _ := strings.Cut(l.owner, " ")
	l.owner = id + " " + rawURL
	return nil
}

// ID is this replica's lease owner id.
func (l *RedisLeases) ID() string {
	id, _, _ := strings.Cut(l.owner, " ")
	return id
}

// LeaseOwner returns the id and advertised URL of key's holder ("" when
// nobody holds it; url "" when the holder advertises none).
func (l *RedisLeases) LeaseOwner(ctx context.Context, key string) (id, url string, err error) {
	v, err := l.c.Get(ctx, l.prefix+key).Result()
	if errors.Is(err, redis.Nil) {
		return "", "", nil
	}
	if err != nil {
		return "", "", err
	}
	id, url, _ = strings.Cut(v, " ")
	return id, url, nil
}
