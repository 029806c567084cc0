package prefetch

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/stowage/stowage/proxy/internal/jobclaim"
)

// SharedList is the cluster's job list (cluster.RedisJobs): job records
// as opaque JSON, the cluster-wide queue cap, and the runners' leases. Its
// calls are bounded and fail fast while the list cannot be reached.
type SharedList interface {
	// Owner is this replica's id in leases.
	Owner() string
	// Add records a new queued job unless maxPending jobs have not ended.
	Add(ctx context.Context, id string, created time.Time, job, req []byte, maxPending int) (bool, error)
	Get(ctx context.Context, id string) ([]byte, bool, error)
	// Request is the request of a job that has not ended; nil when it
	// has none.
	Request(ctx context.Context, id string) ([]byte, error)
	// List returns the newest n records, newest first.
	List(ctx context.Context, n int) ([][]byte, error)
	Candidates(ctx context.Context) ([]jobclaim.Candidate, error)
	TryLease(ctx context.Context, id string) (bool, error)
	Beat(ctx context.Context, id string, job []byte) (jobclaim.Beat, error)
	Finish(ctx context.Context, id string, job []byte, state string) (bool, error)
	Release(ctx context.Context, id string) error
	// RequestCancel flags a job that has not ended; state is "" for an
	// unknown one.
	RequestCancel(ctx context.Context, id string) (string, error)
	Trim(ctx context.Context, keep int) error
}

// ErrSharedUnavailable is the error of an admin request that needs the
// shared job list while it cannot be reached.
var ErrSharedUnavailable = errors.New("prefetch: the cluster's shared job list (Redis) cannot be reached; showing and running this replica's jobs only")

// Timing of shared jobs: a claim pass every claimEvery (and at once when
// kicked), a runner heartbeat (lease renewal, progress, cancel check)
// every beatEvery. The lease TTL is the SharedList's.
const (
	claimEvery   = 2 * time.Second
	beatEvery    = time.Second
	sharedTimout = 5 * time.Second // one admin call on the shared list
)

// Share makes the jobs the cluster's: jobs are recorded in s, listed,
// followed and cancelled from any replica, and run by whichever replica
// claims them (this one runs a claim loop from now until Close). When s
// cannot be reached, jobs are submitted and shown locally, as without it.
// Call it before the first Submit.
func (js *Jobs) Share(s SharedList) {
	ctx, cancel := context.WithCancel(context.Background())
	js.mu.Lock()
	js.shared = s
	js.claimCancel = cancel
	js.claimer = jobclaim.NewClaimer(claimStore{js}, claimRunner{js}, claimEvery, beatEvery, js.log)
	js.mu.Unlock()
	js.wg.Go(func() { js.claimer.Run(ctx) })
}

// sharedErr logs the shared list's failures once per episode (and its
// return); it returns err.
func (js *Jobs) sharedErr(err error) error {
	if err == nil {
		if js.sharedDown.CompareAndSwap(true, false) {
			js.log.Info("the shared prefetch job list answers again")
		}
		return nil
	}
	if js.sharedDown.CompareAndSwap(false, true) {
		js.log.Warn("the shared prefetch job list cannot be reached; jobs are submitted and shown locally until it answers", "err", err)
	}
	return err
}

func sharedCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), sharedTimout)
}

// submitShared records a new job in the shared list and kicks the claim
// loop (this replica runs it if it has a free slot, another one
// otherwise).
func (js *Jobs) submitShared(name string, req Request) (Job, error) {
	var rnd [8]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return Job{}, err
	}
	j := Job{ID: hex.EncodeToString(rnd[:]), Name: name, State: JobQueued, Created: time.Now().UTC()}
	rb, err := encodeRequest(req)
	if err != nil {
		return Job{}, err
	}
	jb, err := json.Marshal(j)
	if err != nil {
		return Job{}, err
	}
	js.mu.Lock()
	closed, maxPending := js.closed, js.maxPending
	js.mu.Unlock()
	if closed {
		return Job{}, ErrClosed
	}
	ctx, cancel := sharedCtx()
	defer cancel()
	added, err := js.shared.Add(ctx, j.ID, j.Created, jb, rb, maxPending)
	if js.sharedErr(err) != nil {
		return Job{}, unavailableError{err}
	}
	if !added {
		return Job{}, ErrQueueFull
	}
	if err := js.shared.Trim(ctx, js.keep); err != nil {
		js.log.Warn("trimming the shared prefetch job list", "err", err)
	}
	js.claimer.Kick()
	return j, nil
}

// claimRunner runs claimed jobs in this replica's slots.
type claimRunner struct{ js *Jobs }

func (r claimRunner) Free() int { return cap(r.js.slots) - len(r.js.slots) }

func (r claimRunner) Running(id string) bool {
	r.js.mu.Lock()
	defer r.js.mu.Unlock()
	j, ok := r.js.jobs[id]
	return ok && j.hold != nil
}

// Start loads the claimed job's record and request and runs it.
func (r claimRunner) Start(id string, h *jobclaim.Hold) bool {
	js := r.js
	select {
	case js.slots <- struct{}{}:
	default:
		return false
	}
	j, req, err := js.loadClaimed(id, h)
	var bad badRecordError
	if errors.As(err, &bad) {
		// It can never run: end it as failed rather than claim it again
		// and again.
		<-js.slots
		h.Stop()
		h.Cancel() // frees its context; nothing runs under it
		js.log.Error("prefetch job cannot be run; ended as failed", "job", id, "err", err)
		ctx, cancel := sharedCtx()
		defer cancel()
		if ferr := (claimStore{js}).endAs(ctx, id, JobFailed, err.Error()); ferr != nil {
			js.log.Warn("ending a prefetch job that cannot be run", "job", id, "err", ferr)
		}
		return true // the lease is released by the end
	}
	if err != nil {
		<-js.slots
		js.log.Error("prefetch job claimed but not loaded", "job", id, "err", err)
		return false
	}
	js.mu.Lock()
	if js.closed {
		js.mu.Unlock()
		<-js.slots
		return false
	}
	js.jobs[id] = j
	js.order = append(js.order, id)
	js.wg.Add(1)
	js.mu.Unlock()
	go js.runShared(j, req)
	return true
}

// loadClaimed builds the local job of a claimed one and publishes that it
// runs here.
func (js *Jobs) loadClaimed(id string, h *jobclaim.Hold) (*job, Request, error) {
	ctx, cancel := sharedCtx()
	defer cancel()
	rec, found, err := js.shared.Get(ctx, id)
	if err == nil && !found {
		err = errors.New("no record")
	}
	if err != nil {
		return nil, Request{}, err
	}
	var snap Job
	if err := json.Unmarshal(rec, &snap); err != nil {
		return nil, Request{}, badRecordError{err}
	}
	rb, err := js.shared.Request(ctx, id)
	if err != nil {
		return nil, Request{}, err
	}
	if rb == nil {
		return nil, Request{}, badRecordError{errors.New("its request is missing")}
	}
	req, err := decodeRequest(rb)
	if err != nil {
		return nil, Request{}, badRecordError{err}
	}
	now := time.Now().UTC()
	if snap.Started == nil { // a resumed job keeps when it first started
		snap.Started = &now
	}
	snap.State, snap.Finished, snap.Error = JobRunning, nil, ""
	snap.Runner, snap.Runs = js.shared.Owner(), snap.Runs+1
	snap.Progress, snap.Report, snap.Complete, snap.Missing = ProgressSnapshot{}, nil, false, nil
	j := &job{Job: snap, prog: &Progress{}, hold: h}
	b, err := json.Marshal(j.snapshotLocked(true))
	if err != nil {
		return nil, Request{}, err
	}
	beat, err := js.shared.Beat(ctx, id, b)
	if err == nil && !beat.Held {
		err = errors.New("lost the lease at once")
	}
	if err != nil {
		return nil, Request{}, err
	}
	return j, req, nil
}

// runShared runs a claimed job under its hold and records its end in the
// shared list, unless the lease was lost (another replica runs it now) or
// this replica is shutting down (the lease is released: another one
// resumes it).
func (js *Jobs) runShared(j *job, req Request) {
	defer js.wg.Done()
	defer func() { <-js.slots }()
	h := j.hold
	ctx := h.Context()
	if j.Runs > 1 {
		js.log.Info("prefetch job resumed", "job", j.ID, "name", j.Name, "run", j.Runs)
	} else {
		js.log.Info("prefetch job started", "job", j.ID, "name", j.Name)
	}
	rep, err := js.eng.Run(ctx, req, j.prog)
	cause := context.Cause(ctx)
	switch {
	case errors.Is(cause, jobclaim.ErrLost):
		h.Stop()
		js.forgetLocal(j)
		js.log.Warn("prefetch job: another replica holds its lease now; stopped here", "job", j.ID)
		return
	case ctx.Err() != nil && !errors.Is(cause, jobclaim.ErrCancelled):
		rctx, cancel := sharedCtx()
		err := h.Release(rctx)
		cancel()
		js.forgetLocal(j)
		js.log.Info("prefetch job handed back for another replica to resume", "job", j.ID, "err", err)
		return
	case errors.Is(cause, jobclaim.ErrCancelled):
		err = errJobCancelled
	}
	gate := js.gate(ctx, j, rep, err)
	h.Stop()
	js.finish(j, rep, err, gate)
	js.recordShared(j)
}

// recordShared writes a shared job's end, retrying a few times while the
// list cannot be reached; then the local copy is dropped. If it never
// gets through, the job's lease expires and another replica runs it again
// (cached content is skipped) and records it.
func (js *Jobs) recordShared(j *job) {
	js.mu.Lock()
	snap := j.snapshotLocked(true)
	js.mu.Unlock()
	b, err := json.Marshal(snap)
	if err != nil {
		js.log.Error("prefetch job record", "job", j.ID, "err", err)
		return
	}
	wait := 500 * time.Millisecond
	for attempt := 1; ; attempt++ {
		ctx, cancel := sharedCtx()
		recorded, err := js.shared.Finish(ctx, j.ID, b, string(snap.State))
		cancel()
		if js.sharedErr(err) == nil {
			if !recorded {
				js.log.Warn("prefetch job ended here but another replica holds it now; its record is theirs", "job", j.ID)
			}
			js.forgetLocal(j)
			return
		}
		if attempt >= 8 {
			js.log.Error("prefetch job: its end could not be recorded in the shared list; kept here", "job", j.ID, "err", err)
			return
		}
		select {
		case <-js.stop:
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, 5*time.Second)
	}
}

// forgetLocal drops this replica's copy of a shared job.
func (js *Jobs) forgetLocal(j *job) {
	js.mu.Lock()
	defer js.mu.Unlock()
	if js.jobs[j.ID] == j {
		delete(js.jobs, j.ID)
		for i, id := range js.order {
			if id == j.ID {
				js.order = append(js.order[:i], js.order[i+1:]...)
				break
			}
		}
	}
}

// claimStore is the shared list as the claim loop sees it; heartbeats
// carry the running job's snapshot.
type claimStore struct{ js *Jobs }

func (s claimStore) Candidates(ctx context.Context) ([]jobclaim.Candidate, error) {
	c, err := s.js.shared.Candidates(ctx)
	return c, s.js.sharedErr(err)
}

func (s claimStore) TryLease(ctx context.Context, id string) (bool, error) {
	return s.js.shared.TryLease(ctx, id)
}

func (s claimStore) Beat(ctx context.Context, id string) (jobclaim.Beat, error) {
	var b []byte
	s.js.mu.Lock()
	if j, ok := s.js.jobs[id]; ok && !j.State.Done() {
		b, _ = json.Marshal(j.snapshotLocked(true))
	}
	s.js.mu.Unlock()
	beat, err := s.js.shared.Beat(ctx, id, b)
	return beat, s.js.sharedErr(err)
}

func (s claimStore) Release(ctx context.Context, id string) error {
	return s.js.shared.Release(ctx, id)
}

// EndCancelled ends a job cancelled while nobody ran it.
func (s claimStore) EndCancelled(ctx context.Context, id string) error {
	err := s.endAs(ctx, id, JobCancelled, errJobCancelled.Error())
	if err == nil {
		s.js.log.Info("prefetch job cancelled before it ran", "job", id)
	}
	return err
}

// endAs ends a job this replica holds the lease of, without running it.
func (s claimStore) endAs(ctx context.Context, id string, state JobState, why string) error {
	rec, found, err := s.js.shared.Get(ctx, id)
	if err != nil || !found {
		return errors.Join(err, errors.New("no record"))
	}
	j := Job{ID: id}
	if err := json.Unmarshal(rec, &j); err != nil {
		j = Job{ID: id} // an unreadable record ends with what is known
	}
	now := time.Now().UTC()
	j.State, j.Error, j.Finished = state, why, &now
	b, err := json.Marshal(j)
	if err != nil {
		return err
	}
	ok, err := s.js.shared.Finish(ctx, id, b, string(state))
	if err == nil && !ok {
		err = fmt.Errorf("job %s: not ours to end", id)
	}
	return err
}

// badRecordError marks a shared job whose record or request cannot be
// read: it can never run.
type badRecordError struct{ err error }

func (e badRecordError) Error() string { return "the job's record cannot be read: " + e.err.Error() }
func (e badRecordError) Unwrap() error { return e.err }
