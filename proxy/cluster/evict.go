package cluster

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/redis/go-redis/v9"

	"github.com/stowage/stowage/storage/evict"
	"github.com/stowage/stowage/storage/evict/lead"
	"github.com/stowage/stowage/storage/usage"
)

// ErrUnavailable is returned by the shared eviction view (RedisEvict) and
// the shared job list (RedisJobs) while Redis is unavailable: a failed or
// timed-out call, or the circuit breaker keeping Redis out for a while.
var ErrUnavailable = errors.New("cluster: redis unavailable")

// RedisEvict shares the eviction bookkeeping of the replicas of one cache
// in Redis, under the leases' namespace and through their circuit breaker:
//
//	evict          the eviction lease: "<owner id>", PX; renewed by its holder
//	evict:wanted   a pass requested by another replica (expires after a minute)
//	usage          hash digest -> "<size> <cached unix s> <b|m>" (b blob, m manifest)
//	usage:lru      sorted set of blobs (not manifests) by last use (unix s),
//	               the latest of any replica's (ZADD GT)
//	usage:bytes    total size of usage (kept with it by the scripts)
//	usage:objects  number of entries of usage
//	usage:seeded   set by the leader's reconciliation with the storage
//
// Every change goes through one Lua script that keeps the hash, the sorted
// set and the totals together, and is idempotent: a commit applied twice
// counts once, a removal of an unknown digest does nothing, an access
// older than the recorded one is ignored.
//
// Times are kept on Redis's clock: each replica measures how far its own
// clock is off Redis's (clockOff) and shifts the times it writes and reads
// by that much, so a replica whose clock is off does not make the blobs it
// caches and serves look old (or new) to the one that evicts.
type RedisEvict struct {
	l                                 *RedisLeases
	lease, wanted                     string
	hash, lru, bytes, objects, seeded string
	keys                              []string
	// now is this replica's clock (time.Now; a test's skewed one).
	now func() time.Time

	offMu sync.Mutex
	// off is Redis's clock minus this replica's, in whole seconds; 0
	// while within clockTolerance. measured: when it was last measured.
	off      time.Duration
	measured time.Time
}

// clockTolerance is how far this replica's clock may be off Redis's before
// its times are shifted: the view keeps whole seconds, and a measurement
// jitters by a round trip. clockRemeasure bounds how often it is measured
// (a pass removes blobs one call each).
const (
	clockTolerance = 2 * time.Second
	clockRemeasure = time.Second
)

// clockOff measures, at most once per clockRemeasure, how far Redis's
// clock is ahead of this replica's (TIME), and returns the offset in use.
// It changes only when a measurement differs by clockTolerance or more, so
// that times read before and after a measurement compare alike.
func (r *RedisEvict) clockOff(ctx context.Context) (time.Duration, error) {
	r.offMu.Lock()
	off, fresh := r.off, !r.measured.IsZero() && r.now().Sub(r.measured) < clockRemeasure
	r.offMu.Unlock()
	if fresh {
		return off, nil
	}
	var m time.Duration
	err := r.do(ctx, func(ctx context.Context) error {
		before := r.now()
		t, err := r.l.c.Time(ctx).Result()
		if err != nil {
			return err
		}
		after := r.now()
		m = t.Sub(before.Add(after.Sub(before) / 2))
		return nil
	})
	if err != nil {
		return 0, err
	}
	r.offMu.Lock()
	defer r.offMu.Unlock()
	if d := m - r.off; d >= clockTolerance || d <= -clockTolerance {
		r.off = m.Round(time.Second)
		if r.off < clockTolerance && r.off > -clockTolerance {
			r.off = 0
		}
	}
	r.measured = r.now()
	return r.off, nil
}

var (
	_ evict.Shared = (*RedisEvict)(nil)
	_ lead.Backend = (*RedisEvict)(nil)
)

// NewRedisEvict returns the eviction bookkeeping of the cache whose leases
// are l (same client, namespace and breaker).
func NewRedisEvict(l *RedisLeases) (*RedisEvict, error) {
	if l == nil {
		return nil, errors.New("cluster: nil leases")
	}
	p := l.prefix
	r := &RedisEvict{l: l, lease: p + "evict", wanted: p + "evict:wanted",
		hash: p + "usage", lru: p + "usage:lru", bytes: p + "usage:bytes", objects: p + "usage:objects", seeded: p + "usage:seeded", now: time.Now}
	r.keys = []string{r.hash, r.lru, r.bytes, r.objects, r.seeded}
	return r, nil
}

// do runs f through the breaker; ErrUnavailable when Redis is kept out or
// the call failed (the breaker logs and counts that), the caller's own
// context error when that ended.
func (r *RedisEvict) do(ctx context.Context, f func(ctx context.Context) error) error {
	ok, err := r.l.call(ctx, f)
	if err != nil {
		return err
	}
	if !ok {
		return ErrUnavailable
	}
	return nil
}

// acquireScript takes the lease when free, or extends it for its holder.
var acquireScript = redis.NewScript(`
local v = redis.call("get", KEYS[1])
if not v then redis.call("set", KEYS[1], ARGV[1], "px", ARGV[2]) return 1 end
if v == ARGV[1] then redis.call("pexpire", KEYS[1], ARGV[2]) return 1 end
return 0`)

// Acquire implements lead.Backend.
func (r *RedisEvict) Acquire(ctx context.Context, ttl time.Duration) (bool, error) {
	var held bool
	err := r.do(ctx, func(ctx context.Context) error {
		n, err := acquireScript.Run(ctx, r.l.c, []string{r.lease}, r.l.ID(), ttl.Milliseconds()).Int()
		held = n == 1
		return err
	})
	return held, err
}

// Release implements lead.Backend.
func (r *RedisEvict) Release(ctx context.Context) error {
	return r.do(ctx, func(ctx context.Context) error {
		return releaseScript.Run(ctx, r.l.c, []string{r.lease}, r.l.ID()).Err()
	})
}

// Request implements lead.Backend.
func (r *RedisEvict) Request(ctx context.Context) error {
	return r.do(ctx, func(ctx context.Context) error {
		return r.l.c.Set(ctx, r.wanted, "1", time.Minute).Err()
	})
}

// TakeRequest implements lead.Backend.
func (r *RedisEvict) TakeRequest(ctx context.Context) (bool, error) {
	var wanted bool
	err := r.do(ctx, func(ctx context.Context) error {
		err := r.l.c.GetDel(ctx, r.wanted).Err()
		if errors.Is(err, redis.Nil) {
			return nil
		}
		wanted = err == nil
		return err
	})
	return wanted, err
}

// LeaseHolder returns the id of the replica holding the eviction lease
// ("" when none): what `ID` of that replica's leases returns.
func (r *RedisEvict) LeaseHolder(ctx context.Context) (string, error) {
	var id string
	err := r.do(ctx, func(ctx context.Context) error {
		v, err := r.l.c.Get(ctx, r.lease).Result()
		if errors.Is(err, redis.Nil) {
			return nil
		}
		id = v
		return err
	})
	return id, err
}

// applyScript applies one batch. KEYS: usage, usage:lru, usage:bytes,
// usage:objects, usage:seeded. ARGV: lost ("1": drop the seeded mark),
// the number of removals, the number of additions, then the removed
// digests, the additions as (digest, size, cached, b|m), the accesses as
// (digest, unix s). Returns {bytes, objects, seeded}.
var applyScript = redis.NewScript(`
local h, z, kb, ko, ks = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
if ARGV[1] == "1" then redis.call("del", ks) end
local nr, na = tonumber(ARGV[2]), tonumber(ARGV[3])
local i = 4
for _ = 1, nr do
  local d = ARGV[i]
  i = i + 1
  local old = redis.call("hget", h, d)
  if old then
    redis.call("decrby", kb, tonumber(string.match(old, "^(%d+)")) or 0)
    redis.call("decr", ko)
    redis.call("hdel", h, d)
  end
  redis.call("zrem", z, d)
end
for _ = 1, na do
  local d, size, cached, m = ARGV[i], tonumber(ARGV[i+1]), ARGV[i+2], ARGV[i+3]
  i = i + 4
  local old = redis.call("hget", h, d)
  if old then
    redis.call("incrby", kb, size - (tonumber(string.match(old, "^(%d+)")) or 0))
    if string.match(old, " m$") then m = "m" end
  else
    redis.call("incrby", kb, size)
    redis.call("incr", ko)
  end
  redis.call("hset", h, d, size .. " " .. cached .. " " .. m)
  if m == "m" then redis.call("zrem", z, d) else redis.call("zadd", z, "GT", cached, d) end
end
while i < #ARGV do
  local d, t = ARGV[i], ARGV[i+1]
  i = i + 2
  if redis.call("zscore", z, d) then redis.call("zadd", z, "GT", t, d) end
end
return {tonumber(redis.call("get", kb) or "0"), tonumber(redis.call("get", ko) or "0"), redis.call("exists", ks)}`)

// totalsScript reads {bytes, objects, seeded} at once.
var totalsScript = redis.NewScript(`
return {tonumber(redis.call("get", KEYS[3]) or "0"), tonumber(redis.call("get", KEYS[4]) or "0"), redis.call("exists", KEYS[5])}`)

// recountScript recomputes the totals from the hash and marks the view
// seeded (the end of a reconciliation). ARGV[1]: the time, unix s.
var recountScript = redis.NewScript(`
local vals = redis.call("hvals", KEYS[1])
local total = 0
for _, v in ipairs(vals) do total = total + (tonumber(string.match(v, "^(%d+)")) or 0) end
redis.call("set", KEYS[3], string.format("%d", total))
redis.call("set", KEYS[4], #vals)
redis.call("set", KEYS[5], ARGV[1])
return {total, #vals, 1}`)

// batchArgs bounds the arguments of one script call, so that no call
// holds Redis for long.
const batchArgs = 2000

// Apply implements evict.Shared, in calls of at most batchArgs arguments.
func (r *RedisEvict) Apply(ctx context.Context, c evict.Changes) (evict.Totals, error) {
	type item struct {
		kind byte // 'r', 'a', 't'
		args []any
	}
	off, err := r.clockOff(ctx)
	if err != nil {
		return evict.Totals{}, err
	}
	var items []item
	for _, d := range c.Removed {
		items = append(items, item{'r', []any{d.String()}})
	}
	for _, b := range c.Added {
		m := "b"
		if b.Manifest {
			m = "m"
		}
		items = append(items, item{'a', []any{b.Digest.String(), b.Size, b.Cached.Add(off).Unix(), m}})
	}
	for d, t := range c.Touched {
		items = append(items, item{'t', []any{d.String(), t.Add(off).Unix()}})
	}
	lost := c.Lost
	var tot evict.Totals
	for first := true; first || len(items) > 0; first = false {
		var rm, add, touch []any
		n := 0
		for len(items) > 0 && n < batchArgs {
			it := items[0]
			items = items[1:]
			switch it.kind {
			case 'r':
				rm = append(rm, it.args...)
			case 'a':
				add = append(add, it.args...)
			default:
				touch = append(touch, it.args...)
			}
			n += len(it.args)
		}
		argv := []any{flag(lost), len(rm), len(add) / 4}
		argv = append(append(append(argv, rm...), add...), touch...)
		if tot, err = r.run(ctx, applyScript, argv...); err != nil {
			return evict.Totals{}, err
		}
		lost = false
	}
	return tot, nil
}

func flag(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

// run runs a script returning {bytes, objects, seeded}.
func (r *RedisEvict) run(ctx context.Context, s *redis.Script, argv ...any) (evict.Totals, error) {
	var tot evict.Totals
	err := r.do(ctx, func(ctx context.Context) error {
		v, err := s.Run(ctx, r.l.c, r.keys, argv...).Int64Slice()
		if err != nil {
			return err
		}
		if len(v) != 3 {
			return fmt.Errorf("cluster: usage script answered %v", v)
		}
		tot = evict.Totals{Bytes: v[0], Objects: v[1], Seeded: v[2] == 1}
		return nil
	})
	return tot, err
}

// Totals implements evict.Shared.
func (r *RedisEvict) Totals(ctx context.Context) (evict.Totals, error) {
	if _, err := r.clockOff(ctx); err != nil { // measured at each sync
		return evict.Totals{}, err
	}
	return r.run(ctx, totalsScript)
}

// Oldest implements evict.Shared.
func (r *RedisEvict) Oldest(ctx context.Context, until time.Time, offset, n int) ([]usage.Blob, error) {
	off, err := r.clockOff(ctx)
	if err != nil {
		return nil, err
	}
	var out []usage.Blob
	err = r.do(ctx, func(ctx context.Context) error {
		zs, err := r.l.c.ZRangeArgsWithScores(ctx, redis.ZRangeArgs{
			Key: r.lru, Start: "-inf", Stop: strconv.FormatInt(until.Add(off).Unix(), 10),
			ByScore: true, Offset: int64(offset), Count: int64(n),
		}).Result()
		if err != nil || len(zs) == 0 {
			return err
		}
		fields := make([]string, len(zs))
		for i, z := range zs {
			fields[i], _ = z.Member.(string)
		}
		vals, err := r.l.c.HMGet(ctx, r.hash, fields...).Result()
		if err != nil {
			return err
		}
		for i, z := range zs {
			s, _ := vals[i].(string)
			d, derr := digest.Parse(fields[i])
			size, cached, manifest, ok := parseEntry(s)
			if derr != nil || !ok || manifest {
				continue // removed meanwhile, or not a blob: nothing to evict
			}
			out = append(out, usage.Blob{Digest: d, Size: size, Cached: time.Unix(cached, 0).Add(-off),
				LastUsed: time.Unix(int64(z.Score), 0).Add(-off)})
		}
		return nil
	})
	return out, err
}

// parseEntry reads "<size> <cached> <b|m>".
func parseEntry(s string) (size, cached int64, manifest, ok bool) {
	f := strings.Fields(s)
	if len(f) != 3 {
		return 0, 0, false, false
	}
	size, err1 := strconv.ParseInt(f[0], 10, 64)
	cached, err2 := strconv.ParseInt(f[1], 10, 64)
	return size, cached, f[2] == "m", err1 == nil && err2 == nil
}

// LastUsed implements evict.Shared.
func (r *RedisEvict) LastUsed(ctx context.Context, d digest.Digest) (time.Time, bool, error) {
	var (
		at    time.Time
		known bool
	)
	off, err := r.clockOff(ctx)
	if err != nil {
		return at, known, err
	}
	err = r.do(ctx, func(ctx context.Context) error {
		s, err := r.l.c.ZScore(ctx, r.lru, d.String()).Result()
		if errors.Is(err, redis.Nil) {
			return nil
		}
		at, known = time.Unix(int64(s), 0).Add(-off), err == nil
		return err
	})
	return at, known, err
}

// Remove implements evict.Shared.
func (r *RedisEvict) Remove(ctx context.Context, d digest.Digest) error {
	_, err := r.Apply(ctx, evict.Changes{Removed: []digest.Digest{d}})
	return err
}

// reconcileMargin allows for clocks of replicas that differ: an entry
// cached this little before a walk started may have been missed by it.
const reconcileMargin = time.Minute

// Reconcile implements evict.Shared: the walked blobs are added (an
// addition is idempotent), entries the walk did not see are dropped when
// they were cached well before it started (a commit during the walk may
// have been missed by it, and stays), and the totals are recounted.
func (r *RedisEvict) Reconcile(ctx context.Context, started time.Time, blobs []usage.Blob) error {
	walked := make(map[string]bool, len(blobs))
	for _, b := range blobs {
		walked[b.Digest.String()] = true
	}
	if _, err := r.Apply(ctx, evict.Changes{Added: blobs}); err != nil {
		return err
	}
	off, err := r.clockOff(ctx)
	if err != nil {
		return err
	}
	cutoff := started.Add(off - reconcileMargin).Unix()
	var stale []digest.Digest
	var cursor uint64
	// Bounded: HSCAN ends in a number of calls proportional to the hash.
	for range 1 + 2*len(blobs)/1000 + 10_000 {
		var page []string
		err := r.do(ctx, func(ctx context.Context) error {
			var err error
			page, cursor, err = r.l.c.HScan(ctx, r.hash, cursor, "", 1000).Result()
			return err
		})
		if err != nil {
			return err
		}
		for i := 0; i+1 < len(page); i += 2 {
			_, cached, _, ok := parseEntry(page[i+1])
			if walked[page[i]] || (ok && cached >= cutoff) {
				continue
			}
			if d, err := digest.Parse(page[i]); err == nil {
				stale = append(stale, d)
			} else {
				stale = append(stale, digest.Digest(page[i])) // a foreign field: drop it too
			}
		}
		if cursor == 0 {
			break
		}
	}
	if len(stale) > 0 {
		if _, err := r.Apply(ctx, evict.Changes{Removed: stale}); err != nil {
			return err
		}
	}
	_, err = r.run(ctx, recountScript, r.now().Add(off).Unix())
	return err
}
