package jobclaim

import (
	"context"
	"sync"
	"time"
)

// Hold keeps a job's lease while this replica runs it: a heartbeat every
// interval renews the lease, publishes the job's snapshot (Store.Beat) and
// ends the job's context when the lease is lost (ErrLost) or an operator
// cancelled it (ErrCancelled).
type Hold struct {
	id     string
	store  Store
	ctx    context.Context //nolint:containedctx // the held job's own context, handed to its run
	cancel context.CancelCauseFunc
	stop   chan struct{}
	wg     sync.WaitGroup
	once   sync.Once
	// failures counts heartbeats the store did not answer in a row.
	mu       sync.Mutex
	failures int
}

// Keep starts holding id's lease (the caller took it) with a heartbeat
// every interval. parent ends the job too (shutdown).
func Keep(parent context.Context, s Store, id string, every time.Duration) *Hold {
	ctx, cancel := context.WithCancelCause(parent)
	h := &Hold{id: id, store: s, ctx: ctx, cancel: cancel, stop: make(chan struct{})}
	h.wg.Go(func() { h.beat(every) })
	return h
}

// ID is the held job.
func (h *Hold) ID() string { return h.id }

// Context is the job's run context; its cause says why it ended.
func (h *Hold) Context() context.Context { return h.ctx }

// Failures is the number of heartbeats in a row the store did not answer.
func (h *Hold) Failures() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.failures
}

func (h *Hold) beat(every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-h.stop:
			return
		case <-h.ctx.Done():
			return
		case <-t.C:
		}
		// Bounded by the store; the job's context must not cut the last
		// beats short (it ends when the job is cancelled).
		b, err := h.store.Beat(context.WithoutCancel(h.ctx), h.id)
		h.mu.Lock()
		if err != nil {
			h.failures++
		} else {
			h.failures = 0
		}
		h.mu.Unlock()
		switch {
		case err != nil:
			// The store does not answer: keep running. If the lease
			// expires meanwhile another replica may run the job too; the
			// next beat that gets through says so.
		case !b.Held:
			h.cancel(ErrLost)
			return
		case b.Cancel:
			h.cancel(ErrCancelled)
			// Keep beating: the lease stays ours until the run records
			// its end.
		}
	}
}

// Cancel ends the job's context with ErrCancelled now (an operator
// cancelled it on this replica), without waiting for the next heartbeat.
func (h *Hold) Cancel() { h.cancel(ErrCancelled) }

// Stop ends the heartbeat (the job has ended and the runner records its
// outcome, or is about to release the lease) and waits for it. The lease
// stays held until it expires or the runner ends the job.
func (h *Hold) Stop() {
	h.once.Do(func() { close(h.stop) })
	h.wg.Wait()
}

// Release stops the heartbeat, ends the job's context with ErrReleased and
// gives the lease up so that another replica resumes the job at once.
func (h *Hold) Release(ctx context.Context) error {
	h.cancel(ErrReleased)
	h.Stop()
	return h.store.Release(ctx, h.id)
}
