package fill

import (
	"context"
	"errors"
	"sort"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
)

// Run is a fill's download. It attaches the staging file, writes, verifies
// and commits; its error is the fill's outcome. ctx is cancelled (with a
// cause) when the fill is cancelled or the registry closes.
type Run func(ctx context.Context, f *Fill) error

// Start describes a fill to start when none runs for the digest.
type Start struct {
	Digest digest.Digest
	Host   string
	Repo   string
	// Value is the caller's own per-fill state (Fill.Value), shared by
	// everyone who joins the fill.
	Value any
	Run   Run
	// End, if set, is called with the outcome after the fill has left the
	// registry and before readers are woken (metrics, logs).
	End func(f *Fill, err error)
}

// Registry holds the running fills, one per digest. The caller owns it
// (no package state).
type Registry struct {
	mu      sync.Mutex
	running map[digest.Digest]*Fill
	closed  bool
	wg      sync.WaitGroup
	// max caps the running fills (0: no cap); see SetMaxRunning.
	max int
}

// ErrTooMany refuses a new fill past the registry's cap (SetMaxRunning).
// Joining a fill that already runs is never refused.
var ErrTooMany = errors.New("fill: too many downloads running")

// SetMaxRunning caps the fills that run at once; n <= 0 removes the cap.
// Join then refuses to start a fill for a new digest with ErrTooMany while
// n run; joining a running one is always allowed. Call it before use.
func (r *Registry) SetMaxRunning(n int) {
	r.mu.Lock()
	r.max = n
	r.mu.Unlock()
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry {
	return &Registry{running: map[digest.Digest]*Fill{}}
}

// Join returns a hold on the running fill for s.Digest, starting one when
// none runs (started reports which). A fill in the registry always has its
// download running, so the hold always gets the staging file. The staging
// file is created by the download, not here: joining never waits for
// storage under the registry's lock.
func (r *Registry) Join(s Start) (h *Hold, started bool, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil, false, ErrClosed
	}
	if f, ok := r.running[s.Digest]; ok {
		f.mu.Lock()
		f.refs++
		f.wants++
		f.mu.Unlock()
		return &Hold{f: f}, false, nil
	}
	if r.max > 0 && len(r.running) >= r.max {
		return nil, false, ErrTooMany
	}
	ctx, cancel := context.WithCancelCause(context.Background())
	f := &Fill{
		dgst: s.Digest, host: s.Host, repo: s.Repo, value: s.Value, started: time.Now(), cancel: cancel,
		changed: make(chan struct{}), size: -1,
		refs: 2, wants: 1, // the download, and the hold
	}
	r.running[s.Digest] = f
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		err := s.Run(ctx, f)
		cancel(nil)
		r.finish(f, err, s.End)
	}()
	return &Hold{f: f}, true, nil
}

// finish forgets the fill (so the next join starts a new one), then records
// the outcome and wakes every reader.
func (r *Registry) finish(f *Fill, err error, end func(*Fill, error)) {
	r.mu.Lock()
	delete(r.running, f.dgst)
	r.mu.Unlock()
	if end != nil {
		end(f, err)
	}
	f.mu.Lock()
	f.done, f.err = true, err
	f.broadcastLocked()
	f.releaseLocked()
	f.mu.Unlock()
}

// Get returns the running fill for d, if any.
func (r *Registry) Get(d digest.Digest) (*Fill, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	f, ok := r.running[d]
	return f, ok
}

// List returns a snapshot of every running fill, oldest first.
func (r *Registry) List() []Info {
	r.mu.Lock()
	fills := make([]*Fill, 0, len(r.running))
	for _, f := range r.running {
		fills = append(fills, f)
	}
	r.mu.Unlock()
	out := make([]Info, 0, len(fills))
	for _, f := range fills {
		out = append(out, f.Info())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Started.Before(out[j].Started) })
	return out
}

// Cancel cancels the running fill for d with ErrCancelled: its readers are
// cut short and nothing is committed, unless every byte was verified
// already (then readers get them all; the cancel can only interrupt the
// commit). It reports whether a fill ran.
func (r *Registry) Cancel(d digest.Digest) bool {
	f, ok := r.Get(d)
	if ok {
		f.cancel(ErrCancelled)
	}
	return ok
}

// Close cancels every running fill, refuses new ones and waits for the
// running ones to end.
func (r *Registry) Close() {
	r.mu.Lock()
	r.closed = true
	for _, f := range r.running {
		f.cancel(ErrClosed)
	}
	r.mu.Unlock()
	r.wg.Wait()
}
