package cluster

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/stowage/stowage/proxy/internal/jobclaim"
)

// RedisJobs is the cluster's shared list of prefetch jobs, under the
// cache's namespace:
//
//	jobs:index     sorted set of job ids by creation time
//	jobs:pending   set of the ids of jobs that have not ended (the queue cap)
//	job:<id>       hash: job (the JSON snapshot the API shows), state,
//	               req (the request, until the job ends), cancel ("1")
//	joblease:<id>  the runner's lease: its owner id, with a TTL renewed by
//	               the runner's heartbeat
//
// Records are opaque JSON to this package (proxy/prefetch owns their
// shape); the scripts only read the state. Every call goes through the
// leases' timeout and circuit breaker and returns ErrUnavailable when Redis
// does not answer.
type RedisJobs struct {
	l   *RedisLeases
	ttl time.Duration
}

// NewRedisJobs returns the job list of the cache whose leases are l; a
// runner's lease lives ttl without a heartbeat.
func NewRedisJobs(l *RedisLeases, ttl time.Duration) (*RedisJobs, error) {
	if l == nil {
		return nil, errors.New("cluster: nil leases")
	}
	if ttl < time.Second {
		return nil, errors.New("cluster: job lease TTL must be at least 1s")
	}
	return &RedisJobs{l: l, ttl: ttl}, nil
}

// Owner is this replica as job leases name it: its lease id, and its
// internal URL when it advertises one (RedisLeases.Advertise).
func (j *RedisJobs) Owner() string { return j.l.owner }

func (j *RedisJobs) index() string            { return j.l.prefix + "jobs:index" }
func (j *RedisJobs) pending() string          { return j.l.prefix + "jobs:pending" }
func (j *RedisJobs) job(id string) string     { return j.l.prefix + "job:" + id }
func (j *RedisJobs) leaseOf(id string) string { return j.l.prefix + "joblease:" + id }

// do runs f through the breaker; ErrUnavailable when Redis did not answer.
func (j *RedisJobs) do(ctx context.Context, f func(ctx context.Context) error) error {
	ok, err := j.l.call(ctx, f)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("%w: the shared job list cannot be reached", ErrUnavailable)
	}
	return nil
}

// live is true for the states of a job that has not ended.
const liveStates = `local function live(s) return s == "queued" or s == "running" end
`

var addJobScript = redis.NewScript(`
if tonumber(ARGV[2]) > 0 and redis.call("scard", KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call("hset", KEYS[3], "job", ARGV[4], "state", "queued", "req", ARGV[5])
redis.call("sadd", KEYS[1], ARGV[1])
redis.call("zadd", KEYS[2], ARGV[3], ARGV[1])
return 1`)

// Add records a new queued job with its request, unless maxPending (> 0)
// jobs of the cluster have not ended: added is then false.
func (j *RedisJobs) Add(ctx context.Context, id string, created time.Time, job, req []byte, maxPending int) (added bool, err error) {
	err = j.do(ctx, func(ctx context.Context) error {
		n, err := addJobScript.Run(ctx, j.l.c, []string{j.pending(), j.index(), j.job(id)},
			id, maxPending, created.UnixMilli(), job, req).Int()
		added = n == 1
		return err
	})
	return added, err
}

// Get returns a job's record.
func (j *RedisJobs) Get(ctx context.Context, id string) (job []byte, found bool, err error) {
	err = j.do(ctx, func(ctx context.Context) error {
		b, err := j.l.c.HGet(ctx, j.job(id), "job").Bytes()
		if errors.Is(err, redis.Nil) {
			return nil
		}
		job, found = b, err == nil
		return err
	})
	return job, found, err
}

// Request returns the request of a job that has not ended; nil when the
// job has none (it ended, or its record is gone).
func (j *RedisJobs) Request(ctx context.Context, id string) (req []byte, err error) {
	err = j.do(ctx, func(ctx context.Context) error {
		b, err := j.l.c.HGet(ctx, j.job(id), "req").Bytes()
		if errors.Is(err, redis.Nil) {
			return nil
		}
		req = b
		return err
	})
	return req, err
}

// List returns the records of the newest n jobs, newest first.
func (j *RedisJobs) List(ctx context.Context, n int) (jobs [][]byte, err error) {
	err = j.do(ctx, func(ctx context.Context) error {
		ids, err := j.l.c.ZRevRange(ctx, j.index(), 0, int64(n)-1).Result()
		if err != nil || len(ids) == 0 {
			return err
		}
		cmds := make([]*redis.StringCmd, len(ids))
		_, err = j.l.c.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, id := range ids {
				cmds[i] = p.HGet(ctx, j.job(id), "job")
			}
			return nil
		})
		if err != nil && !errors.Is(err, redis.Nil) {
			return err
		}
		jobs = jobs[:0]
		for _, c := range cmds {
			if b, err := c.Bytes(); err == nil {
				jobs = append(jobs, b)
			}
		}
		return nil
	})
	return jobs, err
}

// Candidates lists the jobs that have not ended, oldest first, at most
// jobclaim.MaxCandidates, with their cancel flag and whether a runner
// holds their lease.
func (j *RedisJobs) Candidates(ctx context.Context) (out []jobclaim.Candidate, err error) {
	err = j.do(ctx, func(ctx context.Context) error {
		ids, err := j.l.c.SRandMemberN(ctx, j.pending(), jobclaim.MaxCandidates).Result()
		if err != nil || len(ids) == 0 {
			return err
		}
		type row struct {
			fields *redis.SliceCmd
			leased *redis.IntCmd
			score  *redis.FloatCmd
		}
		rows := make([]row, len(ids))
		_, err = j.l.c.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, id := range ids {
				rows[i] = row{p.HMGet(ctx, j.job(id), "state", "cancel"), p.Exists(ctx, j.leaseOf(id)), p.ZScore(ctx, j.index(), id)}
			}
			return nil
		})
		if err != nil && !errors.Is(err, redis.Nil) {
			return err
		}
		scores := map[string]float64{}
		out = out[:0]
		var stale []any
		for i, id := range ids {
			f, err := rows[i].fields.Result()
			if err != nil {
				return err
			}
			state, _ := f[0].(string)
			if state != "queued" && state != "running" {
				stale = append(stale, id) // ended, or its record is gone
				continue
			}
			cancel, _ := f[1].(string)
			scores[id], _ = rows[i].score.Result()
			out = append(out, jobclaim.Candidate{ID: id, Cancel: cancel == "1", Leased: rows[i].leased.Val() > 0})
		}
		if len(stale) > 0 {
			if err := j.l.c.SRem(ctx, j.pending(), stale...).Err(); err != nil {
				return err
			}
		}
		sort.SliceStable(out, func(a, b int) bool { return scores[out[a].ID] < scores[out[b].ID] })
		return nil
	})
	return out, err
}

var tryJobLeaseScript = redis.NewScript(liveStates + `
if not live(redis.call("hget", KEYS[1], "state")) then return 0 end
if redis.call("set", KEYS[2], ARGV[1], "NX", "PX", ARGV[2]) then return 1 end
return 0`)

// TryLease takes a job's lease if nobody holds it and the job has not
// ended.
func (j *RedisJobs) TryLease(ctx context.Context, id string) (got bool, err error) {
	err = j.do(ctx, func(ctx context.Context) error {
		n, err := tryJobLeaseScript.Run(ctx, j.l.c, []string{j.job(id), j.leaseOf(id)}, j.l.owner, j.ttl.Milliseconds()).Int()
		got = n == 1
		return err
	})
	return got, err
}

var beatScript = redis.NewScript(liveStates + `
if not live(redis.call("hget", KEYS[1], "state")) then return -1 end
local v = redis.call("get", KEYS[2])
if v == ARGV[1] then
  redis.call("pexpire", KEYS[2], ARGV[2])
elseif v then
  return -1
else
  redis.call("set", KEYS[2], ARGV[1], "PX", ARGV[2])
end
if ARGV[3] ~= "" then redis.call("hset", KEYS[1], "job", ARGV[3], "state", "running") end
if redis.call("hget", KEYS[1], "cancel") == "1" then return 1 end
return 0`)

// Beat renews the lease of a job this replica runs and publishes its
// snapshot (job; nil publishes nothing). A lease that expired while Redis
// did not answer is taken again if nobody else took it. Held is false
// when another replica holds it, or the job ended.
func (j *RedisJobs) Beat(ctx context.Context, id string, job []byte) (b jobclaim.Beat, err error) {
	err = j.do(ctx, func(ctx context.Context) error {
		n, err := beatScript.Run(ctx, j.l.c, []string{j.job(id), j.leaseOf(id)}, j.l.owner, j.ttl.Milliseconds(), job).Int()
		b = jobclaim.Beat{Held: n >= 0, Cancel: n == 1}
		return err
	})
	return b, err
}

var finishScript = redis.NewScript(liveStates + `
if not live(redis.call("hget", KEYS[1], "state")) then return 0 end
local v = redis.call("get", KEYS[2])
if v and v ~= ARGV[1] then return 0 end
redis.call("hset", KEYS[1], "job", ARGV[2], "state", ARGV[3])
redis.call("hdel", KEYS[1], "req")
redis.call("srem", KEYS[3], ARGV[4])
redis.call("del", KEYS[2])
return 1`)

// Finish records a job's end (its final record and state) and drops its
// lease, only while the lease is this replica's (or nobody's). recorded is
// false when another replica runs the job now or it had already ended.
func (j *RedisJobs) Finish(ctx context.Context, id string, job []byte, state string) (recorded bool, err error) {
	err = j.do(ctx, func(ctx context.Context) error {
		n, err := finishScript.Run(ctx, j.l.c, []string{j.job(id), j.leaseOf(id), j.pending()},
			j.l.owner, job, state, id).Int()
		recorded = n == 1
		return err
	})
	return recorded, err
}

// Release gives a job's lease up without ending the job, so that another
// replica resumes it at once.
func (j *RedisJobs) Release(ctx context.Context, id string) error {
	return j.do(ctx, func(ctx context.Context) error {
		return releaseScript.Run(ctx, j.l.c, []string{j.leaseOf(id)}, j.l.owner).Err()
	})
}

var cancelJobScript = redis.NewScript(liveStates + `
local s = redis.call("hget", KEYS[1], "state")
if not s then return "" end
if live(s) then redis.call("hset", KEYS[1], "cancel", "1") end
return s`)

// RequestCancel flags a job that has not ended as cancelled; its runner
// learns it at its next heartbeat. state is the job's state ("" for an
// unknown job).
func (j *RedisJobs) RequestCancel(ctx context.Context, id string) (state string, err error) {
	err = j.do(ctx, func(ctx context.Context) error {
		var err error
		state, err = cancelJobScript.Run(ctx, j.l.c, []string{j.job(id)}).Text()
		return err
	})
	return state, err
}

var trimJobScript = redis.NewScript(liveStates + `
if live(redis.call("hget", KEYS[1], "state")) then return 0 end
redis.call("del", KEYS[1])
redis.call("zrem", KEYS[2], ARGV[1])
return 1`)

// Trim forgets the oldest ended jobs beyond keep (jobs that have not ended
// are kept whatever their number).
func (j *RedisJobs) Trim(ctx context.Context, keep int) error {
	return j.do(ctx, func(ctx context.Context) error {
		n, err := j.l.c.ZCard(ctx, j.index()).Result()
		if err != nil || n <= int64(keep) {
			return err
		}
		old, err := j.l.c.ZRange(ctx, j.index(), 0, n-int64(keep)-1).Result()
		if err != nil {
			return err
		}
		for _, id := range old {
			if err := trimJobScript.Run(ctx, j.l.c, []string{j.job(id), j.index()}, id).Err(); err != nil {
				return err
			}
		}
		return nil
	})
}

// LeaseTTL is how long a runner's lease lives without a heartbeat.
func (j *RedisJobs) LeaseTTL() time.Duration { return j.ttl }

// String names the list for logs.
func (j *RedisJobs) String() string { return "redis jobs " + strconv.Quote(j.l.prefix) }
