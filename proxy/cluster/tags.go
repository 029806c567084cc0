package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisTags shares the tag policy's state between the replicas of one
// cache: when each tag was last confirmed upstream (so that one HEAD per
// tag per TTL serves the whole cluster), and retags (published on a
// channel, so that the others drop their in-memory resolution at once
// instead of after its few seconds of life).
//
// Its calls go through the leases' circuit breaker: a Redis that fails
// costs at most one timeout per backoff window, and the tag policy then
// falls back to what the shared storage records. The subscriber reconnects
// by itself; messages missed meanwhile are covered by the short lifetime
// of in-memory resolutions.
type RedisTags struct {
	l       *RedisLeases
	keys    string // key prefix of the fetched-at records
	channel string
	keyTTL  time.Duration
	origin  string // this instance, to skip its own messages

	watchOnce sync.Once
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	closeOnce sync.Once

	mu        sync.Mutex
	connected bool
	ps        *redis.PubSub // the current subscription; Close closes it
}

// tagRecordTTL is how long a fetched-at record lives in Redis without
// being refreshed: much longer than any sensible tag TTL, short enough not
// to keep keys of tags nobody pulls any more.
const tagRecordTTL = 7 * 24 * time.Hour

// receiveWait is how long the subscriber waits for a message before it
// pings Redis; a second wait without the pong means the connection is dead.
const receiveWait = 5 * time.Second

// NewRedisTags returns the tag state of the cache whose leases are l (same
// client, namespace and breaker).
func NewRedisTags(l *RedisLeases) (*RedisTags, error) {
	if l == nil {
		return nil, errors.New("cluster: nil leases")
	}
	var id [8]byte
	if _, err := rand.Read(id[:]); err != nil {
		return nil, err
	}
	return &RedisTags{
		l: l, keys: l.prefix + "tagtime:", channel: l.prefix + "retag",
		keyTTL: tagRecordTTL, origin: hex.EncodeToString(id[:]),
	}, nil
}

func (t *RedisTags) key(repo, tag string) string { return t.keys + repo + ":" + tag }

// Fetched returns the digest repo:tag pointed at when a replica last
// confirmed it upstream, and when. ok is false when nobody recorded it or
// Redis is unavailable.
func (t *RedisTags) Fetched(ctx context.Context, repo, tag string) (dgst string, at time.Time, ok bool) {
	var v string
	got, err := t.l.call(ctx, func(ctx context.Context) error {
		var err error
		v, err = t.l.c.Get(ctx, t.key(repo, tag)).Result()
		if errors.Is(err, redis.Nil) {
			v, err = "", nil
		}
		return err
	})
	if !got || err != nil || v == "" {
		return "", time.Time{}, false
	}
	d, ns, found := strings.Cut(v, " ")
	n, perr := strconv.ParseInt(ns, 10, 64)
	if !found || perr != nil || d == "" {
		return "", time.Time{}, false
	}
	return d, time.Unix(0, n), true
}

// Confirmed records that repo:tag pointed at dgst upstream at time at.
// moved means the tag changed (or was fetched anew): the other replicas
// are told to drop their in-memory resolution of it. Failures are the
// breaker's business; the shared storage still holds the record.
func (t *RedisTags) Confirmed(ctx context.Context, repo, tag, dgst string, at time.Time, moved bool) {
	v := dgst + " " + strconv.FormatInt(at.UnixNano(), 10)
	_, _ = t.l.call(ctx, func(ctx context.Context) error {
		if !moved {
			return t.l.c.Set(ctx, t.key(repo, tag), v, t.keyTTL).Err()
		}
		_, err := t.l.c.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.Set(ctx, t.key(repo, tag), v, t.keyTTL)
			p.Publish(ctx, t.channel, t.origin+"\n"+repo+"\n"+tag)
			return nil
		})
		return err
	})
}

// Watch calls forget(repo, tag) for every retag another replica publishes,
// from a goroutine that lives until Close. Only the first call counts.
func (t *RedisTags) Watch(forget func(repo, tag string)) {
	t.watchOnce.Do(func() {
		ctx, cancel := context.WithCancel(context.Background())
		t.cancel = cancel
		t.wg.Go(func() { t.subscribe(ctx, forget) })
	})
}

// Subscribed reports whether the subscriber is currently connected (tests
// wait for it before they publish).
func (t *RedisTags) Subscribed() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.connected
}

func (t *RedisTags) setConnected(v bool) {
	t.mu.Lock()
	t.connected = v
	t.mu.Unlock()
}

// subscribe receives retags until ctx ends, reconnecting after a failure
// (at most once per breaker backoff).
func (t *RedisTags) subscribe(ctx context.Context, forget func(repo, tag string)) {
	for ctx.Err() == nil {
		t.receive(ctx, forget)
		t.setConnected(false)
		select {
		case <-ctx.Done():
		case <-time.After(t.l.backoff):
		}
	}
}

// receive runs one subscription until it fails or ctx ends.
func (t *RedisTags) receive(ctx context.Context, forget func(repo, tag string)) {
	ps := t.l.c.Subscribe(ctx)
	defer func() { _ = ps.Close() }()
	// A read blocked on the connection does not see ctx end: Close closes
	// the subscription itself.
	t.mu.Lock()
	t.ps = ps
	t.mu.Unlock()
	if ctx.Err() != nil {
		return
	}
	sctx, cancel := context.WithTimeout(ctx, t.l.timeout)
	err := ps.Subscribe(sctx, t.channel)
	if err == nil {
		_, err = ps.ReceiveTimeout(sctx, t.l.timeout) // the subscription's confirmation
	}
	cancel()
	if err != nil {
		return
	}
	t.setConnected(true)
	pinged := false
	for {
		msg, err := ps.ReceiveTimeout(ctx, receiveWait)
		if ctx.Err() != nil {
			return
		}
		var ne net.Error
		if err != nil && errors.As(err, &ne) && ne.Timeout() && !pinged {
			// Quiet, or hanging: a pong tells which.
			pctx, cancel := context.WithTimeout(ctx, t.l.timeout)
			perr := ps.Ping(pctx)
			cancel()
			if perr != nil {
				return
			}
			pinged = true
			continue
		}
		if err != nil {
			return
		}
		pinged = false
		m, ok := msg.(*redis.Message)
		if !ok {
			continue
		}
		origin, rest, _ := strings.Cut(m.Payload, "\n")
		repo, tag, ok := strings.Cut(rest, "\n")
		if !ok || origin == t.origin {
			continue
		}
		forget(repo, tag)
	}
}

// Close stops the subscriber and waits for it.
func (t *RedisTags) Close() error {
	t.closeOnce.Do(func() {
		t.watchOnce.Do(func() {}) // no subscriber may start after Close
		if t.cancel != nil {
			t.cancel()
		}
		t.mu.Lock()
		if t.ps != nil {
			_ = t.ps.Close()
		}
		t.mu.Unlock()
		t.wg.Wait()
	})
	return nil
}
