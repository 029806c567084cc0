// Package jobclaim decides which replica runs a shared prefetch job, and
// keeps that decision true while the job runs.
//
// Jobs live in a shared list (Redis, see cluster.RedisJobs). A job is run
// by the one replica holding its lease; the runner renews the lease with a
// heartbeat that also publishes the job's progress and learns whether an
// operator cancelled it. Every replica runs a [Claimer]: a bounded loop
// that looks at the jobs that have not ended and takes the lease of those
// nobody holds (queued ones, and ones whose runner died or restarted, so
// that its lease expired), as long as it has a free slot. A job that has
// ended is never claimed again; a job cancelled while nobody ran it is
// ended as cancelled, not run.
//
// The store may fail (Redis down): a heartbeat that fails keeps the job
// running (a prefetch is idempotent; at worst two replicas run it until
// the store answers again and tells one of them that it lost the lease),
// and a claim pass that fails claims nothing.
package jobclaim

import (
	"context"
	"errors"
)

// Sentinel causes of a held job's context.
var (
	// ErrLost: another replica holds the job's lease now (ours expired
	// while the store did not answer); this replica stops without
	// recording an outcome.
	ErrLost = errors.New("jobclaim: the job's lease was lost to another replica")
	// ErrCancelled: an operator cancelled the job.
	ErrCancelled = errors.New("cancelled by an operator")
	// ErrReleased: the hold was released (shutdown) so another replica
	// resumes the job.
	ErrReleased = errors.New("jobclaim: released for another replica to resume")
)

// Candidate is a job that has not ended, as the shared list shows it.
type Candidate struct {
	ID string
	// Cancel is set when an operator asked to cancel it.
	Cancel bool
	// Leased is true while some replica holds its lease.
	Leased bool
}

// Action is what a claimer does with a candidate.
type Action int

// Actions.
const (
	Skip         Action = iota // leave it: running here or elsewhere, or no free slot
	Claim                      // take its lease and run (or resume) it
	EndCancelled               // take its lease only to end it as cancelled
)

func (a Action) String() string {
	return [...]string{"skip", "claim", "end-cancelled"}[a]
}

// Decide is the claim rule. local is true when this replica already runs
// the job; free when it has a slot for one more.
func Decide(c Candidate, local, free bool) Action {
	switch {
	case local || c.Leased:
		return Skip
	case c.Cancel:
		return EndCancelled // needs no slot: nothing runs
	case !free:
		return Skip
	}
	return Claim
}

// Beat is the answer of one heartbeat.
type Beat struct {
	// Held is false when the lease is no longer ours.
	Held bool
	// Cancel is true when an operator asked to cancel the job.
	Cancel bool
}

// Store is the shared job list as the claim rule needs it. Every call is
// bounded by the store itself.
type Store interface {
	// Candidates lists the jobs that have not ended, oldest first.
	Candidates(ctx context.Context) ([]Candidate, error)
	// TryLease takes id's lease if nobody holds it and the job has not
	// ended.
	TryLease(ctx context.Context, id string) (bool, error)
	// Beat renews id's lease and publishes its snapshot, only while the
	// lease is ours.
	Beat(ctx context.Context, id string) (Beat, error)
	// Release gives id's lease up without ending the job.
	Release(ctx context.Context, id string) error
	// EndCancelled ends id as cancelled; the caller holds its lease.
	EndCancelled(ctx context.Context, id string) error
}

// Runner runs claimed jobs on this replica.
type Runner interface {
	// Free is how many more jobs this replica can run now.
	Free() int
	// Running reports whether this replica runs id.
	Running(id string) bool
	// Start runs id under h (its context ends when the lease is lost, the
	// job is cancelled or the hold released); the runner calls h.Stop
	// when the job ends. false when it cannot start it (h is then
	// released by the claimer).
	Start(id string, h *Hold) bool
}
