package prefetch

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/stowage/stowage/proxy/internal/jobclaim"
	"github.com/stowage/stowage/storage"
)

// JobState is where a job is in its life.
type JobState string

// Job states.
const (
	JobQueued    JobState = "queued"
	JobRunning   JobState = "running"
	JobSucceeded JobState = "succeeded" // every image fetched
	JobFailed    JobState = "failed"    // some image or list entry failed, or the run could not start
	JobCancelled JobState = "cancelled" // cancelled by an operator (Jobs.Cancel) before it ended
)

// Done reports whether the job has ended.
func (s JobState) Done() bool { return s == JobSucceeded || s == JobFailed || s == JobCancelled }

// ErrClosed is returned by Submit after Close.
var ErrClosed = errors.New("prefetch: jobs closed")

// ErrQueueFull is returned by Submit while the jobs that have not ended
// (queued or running) number the cap (SetMaxPending).
var ErrQueueFull = errors.New("prefetch: too many jobs queued or running")

// errJobCancelled is the cause of a job's context when an operator
// cancels it.
var errJobCancelled = errors.New("cancelled by an operator")

// Job is a snapshot of one background run, as the admin API shows it.
type Job struct {
	ID       string           `json:"id"`
	Name     string           `json:"name,omitempty"`
	State    JobState         `json:"state"`
	Created  time.Time        `json:"created"`
	Started  *time.Time       `json:"started,omitempty"`
	Finished *time.Time       `json:"finished,omitempty"`
	Progress ProgressSnapshot `json:"progress"`
	Error    string           `json:"error,omitempty"`
	// Complete is the rollout gate: true once the job has ended with
	// every image of its lists fully cached (checked in the store, see
	// Engine.Verify); false while it runs and when anything is missing.
	Complete bool `json:"complete"`
	// Missing names the images that are not fully cached when the job
	// ended, and why (their failure, or what is not in the cache).
	Missing []Missing `json:"missing,omitempty"`
	// Report is set once the job has ended (omitted in job lists).
	Report *Report `json:"report,omitempty"`
	// Runner is the replica that runs or last ran a job of the cluster's
	// shared list: its lease id, and its internal URL when it advertises
	// one (cluster.advertise); Runs counts how often the job was
	// started: more than 1 when another replica resumed it after its
	// runner stopped.
	Runner string `json:"runner,omitempty"`
	Runs   int    `json:"runs,omitempty"`
}

type job struct {
	Job
	prog   *Progress               // nil for a job loaded from its record: Job.Progress holds the last snapshot
	cancel context.CancelCauseFunc // nil for a loaded job
	hold   *jobclaim.Hold          // a shared job this replica runs (Share): its lease
}

// Jobs runs engine runs in the background with a bound on how many run at
// once; later ones wait queued. It keeps the last finished jobs for
// inspection.
type Jobs struct {
	eng     *Engine
	log     *slog.Logger
	slots   chan struct{}
	keep    int
	stop    chan struct{}
	wg      sync.WaitGroup
	mu      sync.Mutex
	jobs    map[string]*job
	order   []string
	closed  bool
	closeMu sync.Once
	// store keeps job records across restarts (see Persist); saveMu
	// orders the writes so a record never goes back to an older state.
	store  *storage.Store
	saveMu sync.Mutex
	// maxPending caps the jobs not yet ended (0: no cap).
	maxPending int
	// shared is the cluster's job list (Share); nil: this process alone.
	shared      SharedList
	claimer     *jobclaim.Claimer
	claimCancel context.CancelFunc
	sharedDown  atomic.Bool // the shared list failed last time (logged once)
}

// SetMaxPending caps the jobs that are queued or running: past it Submit
// answers ErrQueueFull, so a burst of requests cannot pile up work (and
// the memory of its plans) without bound. n <= 0 removes the cap.
func (js *Jobs) SetMaxPending(n int) {
	js.mu.Lock()
	js.maxPending = n
	js.mu.Unlock()
}

// pendingLocked counts the jobs that have not ended.
func (js *Jobs) pendingLocked() int {
	n := 0
	for _, j := range js.jobs {
		if !j.State.Done() {
			n++
		}
	}
	return n
}

// Cancel cancels a queued or running job: it ends as cancelled, its
// downloads stop (fills other clients wait for go on). found is false for
// an unknown id; ended reports a job that had already ended (nothing to
// cancel).
func (js *Jobs) Cancel(id string) (snap Job, found, ended bool) {
	snap, found, ended, _ = js.CancelJob(id)
	return snap, found, ended
}

// cancelLocal is Cancel for the jobs this replica knows.
func (js *Jobs) cancelLocal(id string) (snap Job, found, ended bool) {
	js.mu.Lock()
	defer js.mu.Unlock()
	j, ok := js.jobs[id]
	if !ok {
		return Job{}, false, false
	}
	if j.State.Done() {
		return j.snapshotLocked(false), true, true
	}
	if j.hold != nil {
		j.hold.Cancel() // a shared job running here: at once, not at the next heartbeat
		return j.snapshotLocked(false), true, false
	}
	if j.cancel == nil {
		return j.snapshotLocked(false), true, true
	}
	j.cancel(errJobCancelled)
	js.log.Info("prefetch job cancelled", "job", j.ID, "name", j.Name)
	return j.snapshotLocked(false), true, false
}

// jobsRecordKind is where job records live in the store.
const jobsRecordKind = "jobs"

// errInterrupted is the error of a job whose record says it had not ended.
const errInterrupted = "interrupted: the server stopped (or another replica runs it) before the job ended"

// Persist keeps job records in store (under /stowage/jobs/, beside the
// cache), so a restarted server still answers GET for the jobs it ran. It
// loads the newest records now (up to keep); a job recorded as queued or
// running is shown as failed, interrupted, since no process here runs it.
// From now on every job's record is written at each change of state. Call
// it before the first Submit.
func (js *Jobs) Persist(ctx context.Context, store *storage.Store) error {
	recs, err := store.Records(ctx, jobsRecordKind)
	if err != nil {
		return fmt.Errorf("prefetch: loading job records: %w", err)
	}
	loaded := make([]*job, 0, len(recs))
	for name, b := range recs {
		var j Job
		if err := json.Unmarshal(b, &j); err != nil || j.ID != name {
			js.log.Warn("unreadable prefetch job record; ignored", "record", name, "err", err)
			continue
		}
		if !j.State.Done() {
			j.State, j.Error = JobFailed, errInterrupted
		}
		loaded = append(loaded, &job{Job: j})
	}
	sort.Slice(loaded, func(a, b int) bool { return loaded[a].Created.Before(loaded[b].Created) })
	js.mu.Lock()
	js.store = store
	ids := make([]string, 0, len(loaded)+len(js.order))
	for _, j := range loaded {
		if _, ok := js.jobs[j.ID]; !ok {
			js.jobs[j.ID] = j
			ids = append(ids, j.ID)
		}
	}
	js.order = append(ids, js.order...)
	dropped := js.forgetLocked()
	js.mu.Unlock()
	js.deleteRecords(dropped)
	return nil
}

// save writes j's record when records are kept.
func (js *Jobs) save(j *job) {
	js.saveMu.Lock()
	defer js.saveMu.Unlock()
	js.mu.Lock()
	store, snap, kept := js.store, j.snapshotLocked(true), js.jobs[j.ID] == j
	js.mu.Unlock()
	if store == nil || !kept || j.hold != nil { // a shared job's record is the shared list's
		return // not kept, or already forgotten (its record is deleted)
	}
	b, err := json.Marshal(snap)
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), recordTimeout)
		err = store.PutRecord(ctx, jobsRecordKind, snap.ID, b)
		cancel()
	}
	if err != nil {
		js.log.Warn("writing prefetch job record", "job", snap.ID, "err", err)
	}
}

// deleteRecords removes the records of forgotten jobs. It takes saveMu, so
// a save that began before the job was forgotten cannot write after it.
func (js *Jobs) deleteRecords(ids []string) {
	if len(ids) == 0 {
		return
	}
	js.saveMu.Lock()
	defer js.saveMu.Unlock()
	js.mu.Lock()
	store := js.store
	js.mu.Unlock()
	if store == nil {
		return
	}
	for _, id := range ids {
		ctx, cancel := context.WithTimeout(context.Background(), recordTimeout)
		if err := store.DeleteRecord(ctx, jobsRecordKind, id); err != nil {
			js.log.Warn("deleting prefetch job record", "job", id, "err", err)
		}
		cancel()
	}
}

// recordTimeout bounds one job record write.
const recordTimeout = 10 * time.Second

// NewJobs returns a job runner over eng running at most parallel jobs at
// once and remembering the last keep jobs.
func NewJobs(eng *Engine, parallel, keep int) (*Jobs, error) {
	if eng == nil || parallel < 1 || keep < 1 {
		return nil, errors.New("prefetch: jobs need an engine, parallel >= 1 and keep >= 1")
	}
	return &Jobs{eng: eng, log: eng.log, slots: make(chan struct{}, parallel), keep: keep,
		stop: make(chan struct{}), jobs: map[string]*job{}}, nil
}

// Submit starts req in the background under a display name and returns
// the job's first snapshot.
//
// With a shared list (Share) the job is recorded there and run by the
// replica that claims it; while the list cannot be reached it is run here
// alone, as without one.
func (js *Jobs) Submit(name string, req Request) (Job, error) {
	if js.shared != nil {
		snap, err := js.submitShared(name, req)
		if !isUnavailable(err) {
			return snap, err
		}
	}
	var rnd [8]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return Job{}, err
	}
	j := &job{Job: Job{ID: hex.EncodeToString(rnd[:]), Name: name, State: JobQueued, Created: time.Now().UTC()},
		prog: &Progress{}}
	js.mu.Lock()
	if js.closed {
		js.mu.Unlock()
		return Job{}, ErrClosed
	}
	if js.maxPending > 0 && js.pendingLocked() >= js.maxPending {
		js.mu.Unlock()
		return Job{}, ErrQueueFull
	}
	ctx, cancel := context.WithCancelCause(context.Background())
	j.cancel = cancel
	js.jobs[j.ID] = j
	js.order = append(js.order, j.ID)
	dropped := js.forgetLocked()
	snap := j.snapshotLocked(true)
	js.wg.Add(1)
	js.mu.Unlock()
	js.deleteRecords(dropped)
	js.save(j)
	go js.run(ctx, j, req)
	return snap, nil
}

func (js *Jobs) run(ctx context.Context, j *job, req Request) {
	defer js.wg.Done()
	defer j.cancel(nil)
	go func() {
		select {
		case <-js.stop:
			j.cancel(ErrClosed)
		case <-ctx.Done():
		}
	}()
	select {
	case js.slots <- struct{}{}:
		defer func() { <-js.slots }()
	case <-ctx.Done():
		js.finish(j, nil, context.Cause(ctx), nil)
		return
	}
	now := time.Now().UTC()
	js.mu.Lock()
	j.State, j.Started = JobRunning, &now
	js.mu.Unlock()
	js.save(j)
	js.log.Info("prefetch job started", "job", j.ID, "name", j.Name)
	rep, err := js.eng.Run(ctx, req, j.prog)
	if errors.Is(context.Cause(ctx), errJobCancelled) {
		err = errJobCancelled // whatever the run made of its context's end
	}
	gate := js.gate(ctx, j, rep, err)
	js.finish(j, rep, err, gate)
}

// gate answers the rollout gate for a finished run; nil when the run did
// not finish or the store cannot answer (the job is then not complete).
func (js *Jobs) gate(ctx context.Context, j *job, rep *Report, runErr error) *Gate {
	if runErr != nil || rep == nil {
		return nil
	}
	g, err := js.eng.Verify(ctx, rep)
	if err != nil {
		js.log.Error("prefetch job: checking the cache for the rollout gate", "job", j.ID, "err", err)
		return nil
	}
	return g
}

func (js *Jobs) finish(j *job, rep *Report, err error, gate *Gate) {
	defer js.save(j)
	now := time.Now().UTC()
	js.mu.Lock()
	defer js.mu.Unlock()
	j.Finished, j.Report = &now, rep
	if gate != nil {
		j.Complete, j.Missing = gate.Complete, gate.Missing
	}
	switch {
	case errors.Is(err, errJobCancelled):
		j.State, j.Error = JobCancelled, errJobCancelled.Error()
	case err != nil:
		j.State, j.Error = JobFailed, err.Error()
	case rep != nil && rep.OK():
		j.State = JobSucceeded
	default:
		j.State = JobFailed
	}
	attrs := []any{"job", j.ID, "name", j.Name, "state", j.State, "complete", j.Complete}
	if rep != nil {
		attrs = append(attrs, "images", rep.Totals.Images, "failed", rep.Totals.Failed, "bytes", rep.Totals.Bytes,
			"upstream_bytes", rep.Totals.UpstreamBytes)
	}
	if err != nil {
		attrs = append(attrs, "err", err)
	}
	js.log.Info("prefetch job finished", attrs...)
}

// forgetLocked drops the oldest finished jobs beyond keep and returns
// their ids.
func (js *Jobs) forgetLocked() []string {
	var out []string
	for len(js.order) > js.keep {
		dropped := false
		for i, id := range js.order {
			if js.jobs[id].State.Done() {
				delete(js.jobs, id)
				js.order = append(js.order[:i], js.order[i+1:]...)
				out = append(out, id)
				dropped = true
				break
			}
		}
		if !dropped {
			return out // all running: keep them
		}
	}
	return out
}

func (j *job) snapshotLocked(withReport bool) Job {
	s := j.Job
	if j.prog != nil {
		s.Progress = j.prog.Snapshot()
		if withReport && j.State == JobRunning {
			// Where each image is, while it runs (the report has them
			// once it ends; job records and lists stay small).
			s.Progress = j.prog.SnapshotImages()
		}
	}
	if !withReport {
		s.Report = nil
	}
	return s
}

// Get returns a job's snapshot with its report.
func (js *Jobs) Get(id string) (Job, bool) {
	j, ok, _ := js.Lookup(id)
	return j, ok
}

// getLocal is Get for the jobs this replica knows.
func (js *Jobs) getLocal(id string) (Job, bool) {
	js.mu.Lock()
	defer js.mu.Unlock()
	j, ok := js.jobs[id]
	if !ok {
		return Job{}, false
	}
	return j.snapshotLocked(true), true
}

// List returns every remembered job, newest first, without reports.
func (js *Jobs) List() []Job {
	out, _ := js.ListAll()
	return out
}

// listLocal is List for the jobs this replica knows.
func (js *Jobs) listLocal() []Job {
	js.mu.Lock()
	defer js.mu.Unlock()
	out := make([]Job, 0, len(js.jobs))
	for _, j := range js.jobs {
		out = append(out, j.snapshotLocked(false))
	}
	sortJobs(out)
	return out
}

func sortJobs(out []Job) {
	sort.SliceStable(out, func(a, b int) bool { return out[a].Created.After(out[b].Created) })
}

// Close cancels running and queued jobs and waits for them to end. Jobs
// of the shared list (Share) that run here are not ended: their leases
// are given back, so that another replica resumes them at once.
func (js *Jobs) Close() {
	js.closeMu.Do(func() {
		js.mu.Lock()
		js.closed = true
		cancel := js.claimCancel
		js.mu.Unlock()
		close(js.stop)
		if cancel != nil {
			cancel() // shared jobs running here are handed back
		}
	})
	js.wg.Wait()
}
