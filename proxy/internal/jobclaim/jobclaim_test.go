package jobclaim

import (
	"context"
	"errors"
	"maps"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// The model of the shared list: what Redis holds (cluster.RedisJobs), with
// leases that expire on the bubble's clock. Each replica sees it through a
// view carrying its owner id, as each replica's RedisJobs does.
type memStore struct {
	mu   sync.Mutex
	ttl  time.Duration
	down bool
	jobs map[string]*memJob
	ids  []string // oldest first
}

type memJob struct {
	ended, cancelled bool
	cancel           bool
	owner            string
	until            time.Time
	beats            int
}

var errDown = errors.New("store down")

func (m *memStore) leasedLocked(j *memJob) bool { return j.owner != "" && time.Now().Before(j.until) }

type view struct {
	m     *memStore
	owner string
}

func (v view) Candidates(context.Context) ([]Candidate, error) {
	v.m.mu.Lock()
	defer v.m.mu.Unlock()
	if v.m.down {
		return nil, errDown
	}
	var out []Candidate
	for _, id := range v.m.ids {
		j := v.m.jobs[id]
		if !j.ended {
			out = append(out, Candidate{ID: id, Cancel: j.cancel, Leased: v.m.leasedLocked(j)})
		}
	}
	return out, nil
}

func (v view) TryLease(_ context.Context, id string) (bool, error) {
	v.m.mu.Lock()
	defer v.m.mu.Unlock()
	if v.m.down {
		return false, errDown
	}
	j := v.m.jobs[id]
	if j.ended || v.m.leasedLocked(j) {
		return false, nil
	}
	j.owner, j.until = v.owner, time.Now().Add(v.m.ttl)
	return true, nil
}

func (v view) Beat(_ context.Context, id string) (Beat, error) {
	v.m.mu.Lock()
	defer v.m.mu.Unlock()
	if v.m.down {
		return Beat{}, errDown
	}
	j := v.m.jobs[id]
	if j.ended || (v.m.leasedLocked(j) && j.owner != v.owner) {
		return Beat{}, nil
	}
	// Ours, or expired and free again: (re)take it.
	j.owner, j.until = v.owner, time.Now().Add(v.m.ttl)
	j.beats++
	return Beat{Held: true, Cancel: j.cancel}, nil
}

func (v view) Release(_ context.Context, id string) error {
	v.m.mu.Lock()
	defer v.m.mu.Unlock()
	if v.m.down {
		return errDown
	}
	if j := v.m.jobs[id]; j.owner == v.owner {
		j.owner = ""
	}
	return nil
}

func (v view) EndCancelled(_ context.Context, id string) error {
	v.m.mu.Lock()
	defer v.m.mu.Unlock()
	if v.m.down {
		return errDown
	}
	j := v.m.jobs[id]
	if j.owner != v.owner {
		return errors.New("not our lease")
	}
	j.ended, j.cancelled, j.owner = true, true, ""
	return nil
}

// finish is the runner recording the job's end (Store.Finish in cluster).
func (v view) finish(id string) bool {
	v.m.mu.Lock()
	defer v.m.mu.Unlock()
	j := v.m.jobs[id]
	if v.m.down || j.owner != v.owner || !v.m.leasedLocked(j) {
		return false
	}
	j.ended, j.owner = true, ""
	return true
}

// replica is one replica's runner: slots, and the holds of what it runs.
type replica struct {
	v      view
	slots  int
	mu     sync.Mutex
	holds  map[string]*Hold
	c      *Claimer
	ctx    context.Context
	cancel context.CancelFunc
}

func (r *replica) Free() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.slots - len(r.holds)
}

func (r *replica) Running(id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.holds[id] != nil
}

func (r *replica) Start(id string, h *Hold) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.holds[id] = h
	return true
}

func (r *replica) hold(id string) *Hold {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.holds[id]
}

func (r *replica) drop(id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.holds, id)
}

// takeAll removes every hold from r and returns them.
func (r *replica) takeAll() map[string]*Hold {
	r.mu.Lock()
	defer r.mu.Unlock()
	holds := r.holds
	r.holds = map[string]*Hold{}
	return holds
}

// die stops r as its process dying would: its heartbeats stop, nothing is
// released.
func (r *replica) die() {
	for _, h := range r.takeAll() {
		h.Stop()
	}
	r.cancel()
}

type world struct {
	t    *testing.T
	m    *memStore
	reps map[string]*replica
}

type step struct {
	name string
	do   func(w *world)
}

const (
	ttl  = 10 * time.Second
	beat = time.Second
)

func submit(id string) step {
	return step{"submit " + id, func(w *world) {
		w.m.mu.Lock()
		defer w.m.mu.Unlock()
		w.m.jobs[id] = &memJob{}
		w.m.ids = append(w.m.ids, id)
	}}
}

// pass runs one claim pass on replica r and checks what it did.
func pass(r string, want map[string]Action) step {
	return step{"pass " + r, func(w *world) {
		got := w.reps[r].c.Pass(w.reps[r].ctx)
		if len(got) == 0 && len(want) == 0 {
			return
		}
		if !maps.Equal(got, want) {
			w.t.Errorf("pass on %s: %v, want %v", r, got, want)
		}
	}}
}

func sleep(d time.Duration) step {
	return step{"sleep " + d.String(), func(*world) { time.Sleep(d); synctest.Wait() }}
}

// kill: the replica's process dies: its heartbeats stop, nothing is
// released.
func kill(r string) step {
	return step{"kill " + r, func(w *world) { w.reps[r].die() }}
}

func cancelJob(id string) step {
	return step{"cancel " + id, func(w *world) {
		w.m.mu.Lock()
		defer w.m.mu.Unlock()
		w.m.jobs[id].cancel = true
	}}
}

func down(d bool) step {
	return step{"store down", func(w *world) {
		w.m.mu.Lock()
		defer w.m.mu.Unlock()
		w.m.down = d
	}}
}

// finish: replica r's run of id ends and records its outcome.
func finish(r, id string, wantRecorded bool) step {
	return step{"finish " + r + " " + id, func(w *world) {
		rep := w.reps[r]
		h := rep.hold(id)
		h.Stop()
		rep.drop(id)
		if got := rep.v.finish(id); got != wantRecorded {
			w.t.Errorf("finish on %s recorded=%v, want %v", r, got, wantRecorded)
		}
	}}
}

// release: replica r shuts down and gives its jobs back.
func release(r string) step {
	return step{"release " + r, func(w *world) {
		for _, h := range w.reps[r].takeAll() {
			if err := h.Release(context.Background()); err != nil {
				w.t.Errorf("release: %v", err)
			}
		}
	}}
}

// cause checks why r's run of id ended (nil: still running).
func cause(r, id string, want error) step {
	return step{"cause " + r + " " + id, func(w *world) {
		h := w.reps[r].hold(id)
		if h == nil {
			w.t.Errorf("%s does not run %s", r, id)
			return
		}
		got := context.Cause(h.Context())
		if !errors.Is(got, want) {
			w.t.Errorf("%s %s: cause %v, want %v", r, id, got, want)
		}
	}}
}

func ended(id string, want, wantCancelled bool) step {
	return step{"ended " + id, func(w *world) {
		w.m.mu.Lock()
		defer w.m.mu.Unlock()
		j := w.m.jobs[id]
		if j.ended != want || j.cancelled != wantCancelled {
			w.t.Errorf("%s: ended=%v cancelled=%v, want %v %v", id, j.ended, j.cancelled, want, wantCancelled)
		}
	}}
}

var claim = func(id string) map[string]Action { return map[string]Action{id: Claim} }

// TestClaimSteps drives two replicas A and B over one shared list, step
// by step on the bubble's clock.
func TestClaimSteps(t *testing.T) {
	for _, tc := range []struct {
		name   string
		slotsA int
		steps  []step
	}{
		{"a queued job is claimed by one replica", 2, []step{
			submit("j1"), pass("A", claim("j1")), pass("B", nil), pass("A", nil), cause("A", "j1", nil),
		}},
		{"a replica without a free slot leaves it to another", 0, []step{
			submit("j1"), pass("A", nil), pass("B", claim("j1")),
		}},
		{"a live runner keeps its lease past the TTL", 2, []step{
			submit("j1"), pass("A", claim("j1")), sleep(3 * ttl), pass("B", nil), cause("A", "j1", nil),
		}},
		{"the runner dies: another resumes once its lease expired", 2, []step{
			submit("j1"), pass("A", claim("j1")), kill("A"), sleep(ttl / 2), pass("B", nil),
			sleep(ttl/2 + time.Millisecond), pass("B", claim("j1")), cause("B", "j1", nil),
		}},
		{"an ended job is never claimed again", 2, []step{
			submit("j1"), pass("A", claim("j1")), finish("A", "j1", true), sleep(3 * ttl), pass("B", nil),
			pass("A", nil), ended("j1", true, false),
		}},
		{"cancel while running: the runner learns within a beat", 2, []step{
			submit("j1"), pass("A", claim("j1")), sleep(beat / 2), cancelJob("j1"), cause("A", "j1", nil),
			sleep(beat / 2), cause("A", "j1", ErrCancelled), finish("A", "j1", true),
		}},
		{"cancelled while nobody runs it: ended as cancelled, never run", 0, []step{
			submit("j1"), cancelJob("j1"), pass("A", map[string]Action{"j1": EndCancelled}),
			pass("B", nil), ended("j1", true, true),
		}},
		{"cancelled after its runner died: ended as cancelled, not resumed", 2, []step{
			submit("j1"), pass("A", claim("j1")), kill("A"), cancelJob("j1"), sleep(ttl + beat),
			pass("B", map[string]Action{"j1": EndCancelled}), ended("j1", true, true),
		}},
		{"store down: the run goes on and keeps its lease when the store is back", 2, []step{
			submit("j1"), pass("A", claim("j1")), down(true), sleep(ttl + 2*beat), pass("B", nil),
			cause("A", "j1", nil), down(false), sleep(beat), pass("B", nil), cause("A", "j1", nil),
		}},
		{"store down past the TTL and another replica claimed: the first one stops", 2, []step{
			submit("j1"), pass("A", claim("j1")), down(true), sleep(ttl + 2*beat), down(false),
			pass("B", claim("j1")), sleep(beat), cause("A", "j1", ErrLost), cause("B", "j1", nil),
			finish("B", "j1", true), ended("j1", true, false),
		}},
		{"released at shutdown: another replica resumes at once", 2, []step{
			submit("j1"), pass("A", claim("j1")), release("A"), pass("B", claim("j1")),
		}},
		{"store down: a pass claims nothing", 2, []step{
			submit("j1"), down(true), pass("A", nil), down(false), pass("A", claim("j1")),
		}},
		{"oldest first, up to the free slots", 1, []step{
			submit("j1"), submit("j2"), pass("A", claim("j1")), pass("B", claim("j2")), pass("A", nil),
			finish("A", "j1", true), pass("A", nil), ended("j2", false, false),
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				m := &memStore{ttl: ttl, jobs: map[string]*memJob{}}
				w := &world{t: t, m: m, reps: map[string]*replica{}}
				for name, slots := range map[string]int{"A": tc.slotsA, "B": 2} {
					ctx, cancel := context.WithCancel(t.Context())
					r := &replica{v: view{m: m, owner: name}, slots: slots, holds: map[string]*Hold{}, ctx: ctx, cancel: cancel}
					r.c = NewClaimer(r.v, r, 2*time.Second, beat, nil)
					w.reps[name] = r
				}
				for _, s := range tc.steps {
					s.do(w)
					if t.Failed() {
						t.Fatalf("after step %q", s.name)
					}
				}
				for _, r := range w.reps {
					r.die()
				}
			})
		})
	}
}

// TestDecide is the claim rule alone.
func TestDecide(t *testing.T) {
	for _, tc := range []struct {
		c           Candidate
		local, free bool
		want        Action
	}{
		{Candidate{}, false, true, Claim},
		{Candidate{}, false, false, Skip},
		{Candidate{}, true, true, Skip},
		{Candidate{Leased: true}, false, true, Skip},
		{Candidate{Cancel: true}, false, false, EndCancelled},
		{Candidate{Cancel: true, Leased: true}, false, true, Skip},
		{Candidate{Cancel: true}, true, true, Skip},
	} {
		if got := Decide(tc.c, tc.local, tc.free); got != tc.want {
			t.Errorf("Decide(%+v, local=%v, free=%v) = %v, want %v", tc.c, tc.local, tc.free, got, tc.want)
		}
	}
}

// TestRunKicked: a kick runs a pass without waiting for the interval, and
// Run ends with its context.
func TestRunKicked(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := &memStore{ttl: ttl, jobs: map[string]*memJob{}}
		r := &replica{v: view{m: m, owner: "A"}, slots: 1, holds: map[string]*Hold{}}
		c := NewClaimer(r.v, r, time.Hour, beat, nil)
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() { c.Run(ctx); close(done) }()
		synctest.Wait()
		submit("j1").do(&world{m: m})
		c.Kick()
		synctest.Wait()
		if !r.Running("j1") {
			t.Fatal("a kick did not claim the submitted job")
		}
		r.hold("j1").Stop()
		cancel()
		<-done
	})
}
