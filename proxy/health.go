package proxy

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// probeEvery is how often /readyz writes a probe file at most: the result
// is reused in between, so probes under load cost no I/O.
const probeEvery = 5 * time.Second

// health is the proxy's own condition as /readyz reports it: draining
// (set by the server on SIGTERM), a disk-full episode, the last storage
// probe; and the background integrity checks of cache hits.
type health struct {
	draining atomic.Bool

	mu        sync.Mutex
	full      bool      // a disk-full episode is running
	fullSince time.Time // its start
	probeAt   time.Time
	probeErr  error

	probing  sync.Mutex // one probe at a time
	checking atomic.Int32
	checks   sync.WaitGroup
	// stopChecks ends the background checks (Close); set with the first.
	checksCtx  context.Context
	stopChecks context.CancelFunc
}

// goCheck runs check in the background unless Close has begun; the
// check's context ends with Close.
func (h *health) goCheck(check func(ctx context.Context)) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.checksCtx == nil {
		h.checksCtx, h.stopChecks = context.WithCancel(context.Background())
	}
	if h.checksCtx.Err() != nil {
		return false // closed
	}
	ctx := h.checksCtx
	h.checks.Go(func() { check(ctx) }) // under mu: never after closeChecks' Wait began
	return true
}

// closeChecks cancels the background checks and waits for them.
func (h *health) closeChecks() {
	h.mu.Lock()
	if h.stopChecks == nil {
		h.checksCtx, h.stopChecks = context.WithCancel(context.Background())
	}
	h.stopChecks()
	h.mu.Unlock()
	h.checks.Wait()
}

// SetDraining marks the proxy as stopping (true): /readyz answers 503 so
// load balancers send no new clients, while requests keep being served.
func (p *Proxy) SetDraining(draining bool) { p.health.draining.Store(draining) }

// DiskFull reports whether a disk-full episode is running: a write to the
// cache failed for lack of space and no blob was committed since.
func (p *Proxy) DiskFull() bool {
	p.health.mu.Lock()
	defer p.health.mu.Unlock()
	return p.health.full
}

// noteStorageError records a failed cache write. A full disk (or quota)
// starts a disk-full episode, logged once and counted, and asks eviction to
// make room at once. Other errors are left to the caller's log.
func (p *Proxy) noteStorageError(err error) {
	if err == nil || !isDiskFull(err) {
		return
	}
	p.cacheHooks().Trigger()
	h := &p.health
	h.mu.Lock()
	started := !h.full
	if started {
		h.full, h.fullSince = true, p.now()
	}
	h.mu.Unlock()
	if started {
		p.m.diskFullEpisodes.Inc()
		p.m.diskFull.Set(1)
		p.log.Error("cache storage is full: serving from the upstream without caching until space returns", "err", err)
	}
}

// noteStorageWrite records a successful cache write of content: a running
// disk-full episode ends.
func (p *Proxy) noteStorageWrite() {
	h := &p.health
	h.mu.Lock()
	ended := h.full
	since := h.fullSince
	h.full = false
	h.mu.Unlock()
	if ended {
		p.m.diskFull.Set(0)
		p.log.Info("cache storage has space again: caching resumed", "episode", p.now().Sub(since).Round(time.Second))
	}
}

// probeStorage writes and removes a small file in the cache root, at most
// every probeEvery; it returns the last result.
func (p *Proxy) probeStorage() error {
	h := &p.health
	h.probing.Lock()
	defer h.probing.Unlock()
	h.mu.Lock()
	at, last := h.probeAt, h.probeErr
	h.mu.Unlock()
	now := p.now()
	if !at.IsZero() && now.Sub(at) < probeEvery && !now.Before(at) {
		return last
	}
	err := p.writeProbe()
	h.mu.Lock()
	h.probeAt, h.probeErr = now, err
	h.mu.Unlock()
	p.noteStorageError(err)
	return err
}

// writeProbe writes 4 KiB to a new file under the store's root and syncs
// it. A store without a local root (a remote driver) is not probed.
func (p *Proxy) writeProbe() error {
	root := p.store.Root()
	if root == "" {
		return nil
	}
	f, err := os.CreateTemp(root, ".stowage-readyz-*")
	if err != nil {
		return err
	}
	defer func() { _ = os.Remove(f.Name()) }()
	_, werr := f.Write(make([]byte, 4096))
	if werr == nil {
		werr = f.Sync()
	}
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	return werr
}

type readiness struct {
	Status  string   `json:"status"` // ok, degraded, draining, unready
	Reasons []string `json:"reasons,omitempty"`
}

// serveReady answers /readyz. 503 when the proxy should get no traffic
// (draining, storage not writable for another reason than space); 200 with
// status "degraded" during a disk-full episode: the proxy still serves
// every pull, uncached, so it stays in the load balancer.
func (p *Proxy) serveReady(w http.ResponseWriter, r *http.Request) {
	rd := readiness{Status: "ok"}
	code := http.StatusOK
	if p.health.draining.Load() {
		rd.Status, code = "draining", http.StatusServiceUnavailable
		rd.Reasons = append(rd.Reasons, "shutting down")
	}
	if err := p.probeStorage(); err != nil && !isDiskFull(err) {
		if code == http.StatusOK {
			rd.Status, code = "unready", http.StatusServiceUnavailable
		}
		rd.Reasons = append(rd.Reasons, "cache storage is not writable: "+err.Error())
	}
	p.health.mu.Lock()
	full, since := p.health.full, p.health.fullSince
	p.health.mu.Unlock()
	if full {
		if code == http.StatusOK {
			rd.Status = "degraded"
		}
		rd.Reasons = append(rd.Reasons, fmt.Sprintf("cache storage full since %s: serving uncached", since.UTC().Format(time.RFC3339)))
	}
	body, _ := json.Marshal(rd)
	body = append(body, '\n')
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	if r.Method != http.MethodHead {
		_, _ = w.Write(body)
	}
}
