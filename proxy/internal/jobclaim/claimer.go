package jobclaim

import (
	"context"
	"log/slog"
	"time"
)

// Claimer is the loop every replica runs: each interval (or when kicked,
// e.g. when a job is submitted or a local job ends) one pass over the
// shared list claims what nobody runs. A pass looks at MaxCandidates jobs
// at most.
type Claimer struct {
	store Store
	run   Runner
	every time.Duration
	beat  time.Duration
	log   *slog.Logger
	kick  chan struct{}
}

// MaxCandidates bounds the jobs one pass looks at.
const MaxCandidates = 1000

// NewClaimer returns a claimer passing every interval and holding claimed
// jobs with a heartbeat every beat.
func NewClaimer(s Store, r Runner, every, beat time.Duration, log *slog.Logger) *Claimer {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Claimer{store: s, run: r, every: every, beat: beat, log: log, kick: make(chan struct{}, 1)}
}

// Kick asks for a pass now (it never blocks).
func (c *Claimer) Kick() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// Run passes until ctx ends. Held jobs run under ctx: when it ends they end
// too (the runner then releases their leases).
func (c *Claimer) Run(ctx context.Context) {
	t := time.NewTicker(c.every)
	defer t.Stop()
	for {
		c.Pass(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-c.kick:
		}
	}
}

// Pass runs one claim pass and returns what it did per job (for tests and
// logs). A store that fails ends the pass: nothing more is claimed.
func (c *Claimer) Pass(ctx context.Context) map[string]Action {
	cands, err := c.store.Candidates(ctx)
	if err != nil {
		if ctx.Err() == nil {
			c.log.Debug("prefetch job claim pass skipped", "err", err)
		}
		return nil
	}
	if len(cands) > MaxCandidates {
		cands = cands[:MaxCandidates]
	}
	out := map[string]Action{}
	free := c.run.Free()
	for _, cand := range cands {
		if ctx.Err() != nil {
			return out
		}
		a := Decide(cand, c.run.Running(cand.ID), free > 0)
		if a == Skip {
			continue
		}
		got, err := c.store.TryLease(ctx, cand.ID)
		if err != nil {
			return out
		}
		if !got {
			continue // another replica was quicker
		}
		switch a {
		case EndCancelled:
			if err := c.store.EndCancelled(ctx, cand.ID); err != nil {
				c.log.Warn("ending a cancelled prefetch job", "job", cand.ID, "err", err)
				_ = c.store.Release(context.WithoutCancel(ctx), cand.ID)
				continue
			}
			out[cand.ID] = a
		case Claim:
			h := Keep(ctx, c.store, cand.ID, c.beat)
			if !c.run.Start(cand.ID, h) {
				_ = h.Release(context.WithoutCancel(ctx))
				continue
			}
			free--
			out[cand.ID] = a
		}
	}
	return out
}
