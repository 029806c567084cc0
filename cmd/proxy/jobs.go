package main

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/stowage/stowage/config"
	"github.com/stowage/stowage/proxy/cluster"
)

// sharedJobLease is how long a replica running a shared prefetch job keeps
// it without a heartbeat (one a second): a runner that dies is replaced
// after at most this long plus a claim pass (2 s).
const sharedJobLease = 10 * time.Second

// sharedJobs is the cluster's prefetch job list in Redis, on a client and
// circuit breaker of its own (bounded by redis.timeout like the fill
// coordinator's), under the cache's namespace.
type sharedJobs struct {
	rc     *redis.Client
	prefix string
	jobs   *cluster.RedisJobs
	owner  string
}

func newSharedJobs(cfg *config.Config, log *slog.Logger) (*sharedJobs, error) {
	rc := cluster.NewRedisClient(cfg.Redis.Addr, os.Getenv(cfg.Redis.PasswordEnv), cfg.Redis.DB, cfg.Redis.Timeout)
	// Its breaker logs nothing itself: the jobs log each episode of an
	// unreachable list once, in their own words.
	leases, err := cluster.NewRedisLeases(rc, cfg.RedisPrefix(), 30*time.Second, cluster.WithTimeout(cfg.Redis.Timeout))
	if err != nil {
		return nil, errors.Join(err, rc.Close())
	}
	if cfg.Cluster.Listen != "" {
		// Jobs name their runner with its internal URL too (as fill
		// leases do), so an operator sees which pod runs a job.
		u, err := advertiseURL(cfg.Cluster)
		if err == nil {
			err = leases.Advertise(u)
		}
		if err != nil {
			log.Warn("prefetch jobs: runners are named by their id only", "err", err)
		}
	}
	jobs, err := cluster.NewRedisJobs(leases, sharedJobLease)
	if err != nil {
		return nil, errors.Join(err, rc.Close())
	}
	return &sharedJobs{rc: rc, prefix: cfg.RedisPrefix(), jobs: jobs, owner: leases.ID()}, nil
}

// firstForTick reports whether this replica is the first to claim the
// schedule's tick at now (to the minute), so that one scheduled job per
// tick runs in the cluster rather than one per replica. When Redis does
// not answer it says true: a duplicate job is harmless (cached content is
// skipped).
func (s *sharedJobs) firstForTick(now time.Time) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	key := s.prefix + "jobs:schedule:" + strconv.FormatInt(now.Unix()/60, 10)
	ok, err := s.rc.SetNX(ctx, key, s.owner, 10*time.Minute).Result()
	return ok || err != nil
}

func (s *sharedJobs) close() { _ = s.rc.Close() }
