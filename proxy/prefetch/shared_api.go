package prefetch

import (
	"encoding/json"
	"errors"
)

// unavailableError marks a failure of the shared list itself (Redis does
// not answer), after which the jobs fall back to this replica's.
type unavailableError struct{ err error }

func (e unavailableError) Error() string   { return ErrSharedUnavailable.Error() + ": " + e.err.Error() }
func (e unavailableError) Unwrap() []error { return []error{ErrSharedUnavailable, e.err} }

func isUnavailable(err error) bool { return errors.Is(err, ErrSharedUnavailable) }

// Lookup returns a job's snapshot with its report, from the shared list
// when there is one (a job running here is shown from here: fresher than
// its last heartbeat). err is ErrSharedUnavailable when the shared list
// cannot be reached and the job is not known here.
func (js *Jobs) Lookup(id string) (Job, bool, error) {
	if js.shared == nil {
		j, ok := js.getLocal(id)
		return j, ok, nil
	}
	js.mu.Lock()
	if j, ok := js.jobs[id]; ok && j.hold != nil && !j.State.Done() {
		snap := j.snapshotLocked(true)
		js.mu.Unlock()
		return snap, true, nil
	}
	js.mu.Unlock()
	ctx, cancel := sharedCtx()
	defer cancel()
	rec, found, err := js.shared.Get(ctx, id)
	if js.sharedErr(err) != nil {
		j, ok := js.getLocal(id)
		if ok {
			return j, true, nil
		}
		return Job{}, false, unavailableError{err}
	}
	if !found {
		j, ok := js.getLocal(id) // a job run here while the list was unreachable
		return j, ok, nil
	}
	var j Job
	if err := json.Unmarshal(rec, &j); err != nil {
		return Job{}, false, err
	}
	return j, true, nil
}

// ListAll returns every remembered job of the cluster, newest first,
// without reports, and this replica's jobs that the shared list does not
// have (run while it could not be reached). err is ErrSharedUnavailable
// when the shared list cannot be reached: the jobs are then this
// replica's only.
func (js *Jobs) ListAll() ([]Job, error) {
	local := js.listLocal()
	if js.shared == nil {
		return local, nil
	}
	ctx, cancel := sharedCtx()
	defer cancel()
	recs, err := js.shared.List(ctx, js.keep)
	if js.sharedErr(err) != nil {
		return local, unavailableError{err}
	}
	byID := make(map[string]int, len(local))
	for i, j := range local {
		byID[j.ID] = i
	}
	out := make([]Job, 0, len(recs)+len(local))
	for _, rec := range recs {
		var j Job
		if err := json.Unmarshal(rec, &j); err != nil {
			js.log.Warn("unreadable shared prefetch job record; ignored", "err", err)
			continue
		}
		if i, ok := byID[j.ID]; ok {
			j = local[i] // running here: fresher than its heartbeat
			delete(byID, j.ID)
		}
		j.Report, j.Progress.PerImage, j.Progress.ImagesTruncated = nil, nil, false
		out = append(out, j)
	}
	for _, i := range byID {
		out = append(out, local[i])
	}
	sortJobs(out)
	return out, nil
}

// CancelJob cancels a queued or running job of the cluster: its runner,
// on whichever replica, learns it at its next heartbeat (about a second;
// at once when it runs here), and a job nobody runs is ended as cancelled
// by the next claim pass. found is false for an unknown id; ended reports
// a job that had already ended. err is ErrSharedUnavailable when the
// shared list cannot be reached and the job is not known here.
func (js *Jobs) CancelJob(id string) (snap Job, found, ended bool, err error) {
	if js.shared == nil {
		snap, found, ended = js.cancelLocal(id)
		return snap, found, ended, nil
	}
	ctx, cancel := sharedCtx()
	state, serr := js.shared.RequestCancel(ctx, id)
	cancel()
	if js.sharedErr(serr) != nil || state == "" {
		// Unknown to the list, or the list is unreachable: a job run here.
		snap, found, ended = js.cancelLocal(id)
		if !found && serr != nil {
			return Job{}, false, false, unavailableError{serr}
		}
		return snap, found, ended, nil
	}
	if js.claimer != nil {
		js.claimer.Kick() // ends it now if nobody runs it
	}
	js.cancelLocal(id) // runs here: at once
	snap, _, err = js.Lookup(id)
	if JobState(state).Done() {
		return snap, true, true, err
	}
	js.log.Info("prefetch job cancellation requested", "job", id)
	return snap, true, false, err
}
