package usage

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// PullsKind is the record kind of the pull-count files.
const PullsKind = "pulls"

// Pull counts are persisted like the access times: in memory per hit,
// written in batches, several processes' files merged on load. Unlike an
// access time (where merging keeps the latest and a file read twice does
// no harm) a count is summed, so the files are designed so that no count
// is ever read twice or lost, also when replicas compact at the same time
// (see pullfiles.go).

// PullCount is one repository's pulls: how many, and the last one.
type PullCount struct {
	Count int64
	Last  time.Time
}

func (c PullCount) plus(o PullCount) PullCount {
	c.Count += o.Count
	if o.Last.After(c.Last) {
		c.Last = o.Last
	}
	return c
}

// Pulls counts manifest pulls per cache repository
// ("docker.io/library/alpine") and persists them in batches into a
// Records store. Pulled costs a map write under a mutex; Save writes one
// small file with the pulls since the previous Save. Safe for concurrent
// use.
type Pulls struct {
	rec Records
	now func() time.Time

	mu sync.Mutex
	// base is what the files held at Restore; own is what this process
	// counted since it started (saved or not); dirty is what it has not
	// saved yet.
	base  map[string]PullCount
	own   map[string]PullCount
	dirty map[string]PullCount
	// lastCompact is when this process last compacted (or found a recent
	// snapshot); compaction runs at most once per compactEvery.
	lastCompact time.Time
}

// NewPulls returns a counter persisting into rec; now is the clock
// (time.Now when nil).
func NewPulls(rec Records, now func() time.Time) (*Pulls, error) {
	if rec == nil {
		return nil, errors.New("usage: pulls need a record store")
	}
	if now == nil {
		now = time.Now
	}
	return &Pulls{rec: rec, now: now, base: map[string]PullCount{}, own: map[string]PullCount{}, dirty: map[string]PullCount{}}, nil
}

// Pulled counts one pull of repo now.
func (p *Pulls) Pulled(repo string) {
	one := PullCount{Count: 1, Last: p.now()}
	p.mu.Lock()
	p.own[repo] = p.own[repo].plus(one)
	p.dirty[repo] = p.dirty[repo].plus(one)
	p.mu.Unlock()
}

// Counts returns every repository's pulls as this process knows them:
// the persisted counts read at Restore plus its own since.
func (p *Pulls) Counts() map[string]PullCount {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[string]PullCount, len(p.base)+len(p.own))
	for r, c := range p.base {
		out[r] = c
	}
	for r, c := range p.own {
		out[r] = out[r].plus(c)
	}
	return out
}

// Count returns one repository's pulls (as Counts).
func (p *Pulls) Count(repo string) PullCount {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.base[repo].plus(p.own[repo])
}

// Restore reads the persisted counts (every process's files, merged). Call
// it once, before the first Save; pulls counted meanwhile are kept.
func (p *Pulls) Restore(ctx context.Context) error {
	counts, err := LoadPulls(ctx, p.rec)
	if err != nil {
		return err
	}
	p.mu.Lock()
	p.base = counts
	p.mu.Unlock()
	return nil
}

// Save writes the pulls counted since the last Save as one new file
// (nothing when there were none), then compacts old files when it is time.
// On a failed write the pulls stay pending for the next Save.
func (p *Pulls) Save(ctx context.Context) error {
	p.mu.Lock()
	dirty := p.dirty
	p.dirty = map[string]PullCount{}
	p.mu.Unlock()
	if len(dirty) > 0 {
		if err := p.rec.PutRecord(ctx, PullsKind, deltaName(p.now()), encodePulls(dirty)); err != nil {
			p.mu.Lock()
			for r, c := range dirty {
				p.dirty[r] = p.dirty[r].plus(c)
			}
			p.mu.Unlock()
			return fmt.Errorf("pull counts: %w", err)
		}
	}
	now := p.now()
	p.mu.Lock()
	due := now.Sub(p.lastCompact) >= compactEvery
	if due {
		p.lastCompact = now
	}
	p.mu.Unlock()
	if !due {
		return nil
	}
	return compactPulls(ctx, p.rec, now)
}

// Run restores the persisted counts, saves every interval until ctx ends,
// then once more on a short deadline of its own, and returns nil. log sees
// the failures (nil: none).
func (p *Pulls) Run(ctx context.Context, interval time.Duration, log func(msg string, err error)) error {
	if interval <= 0 {
		return errors.New("usage: pulls: interval must be positive")
	}
	if log == nil {
		log = func(string, error) {}
	}
	if err := p.Restore(ctx); err != nil && ctx.Err() == nil {
		log("restoring pull counts", err)
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			p.saveAtShutdown(ctx, log)
			return nil
		case <-t.C:
			if err := p.Save(ctx); err != nil && ctx.Err() == nil {
				log("saving pull counts", err)
			}
		}
	}
}

// saveAtShutdown saves on a short deadline of its own (ctx has ended).
func (p *Pulls) saveAtShutdown(ctx context.Context, log func(string, error)) {
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := p.Save(sctx); err != nil {
		log("saving pull counts at shutdown", err)
	}
}
