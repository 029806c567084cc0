package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/redis/go-redis/v9"

	"github.com/stowage/stowage/config"
	"github.com/stowage/stowage/proxy/prefetch"
)

// pacedUpstream is a real registry (go-containerregistry's) whose blob
// GETs are paced and counted per digest: started (answered 200 or 206,
// i.e. sending the blob's bytes; a 416 to a Range this registry does not
// take sends none), and completed (every byte written).
type pacedUpstream struct {
	next    http.Handler
	chunk   int
	pause   time.Duration
	mu      sync.Mutex
	started map[string]int
	done    map[string]int
}

func (u *pacedUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	i := strings.LastIndex(r.URL.Path, "/blobs/sha256:")
	if r.Method != http.MethodGet || i < 0 {
		u.next.ServeHTTP(w, r)
		return
	}
	d := r.URL.Path[i+len("/blobs/"):]
	pw := &pacedWriter{ResponseWriter: w, chunk: u.chunk, pause: u.pause, ctx: r.Context(),
		onBody: func() { u.mu.Lock(); u.started[d]++; u.mu.Unlock() }}
	u.next.ServeHTTP(pw, r)
	if pw.err == nil && r.Context().Err() == nil {
		u.mu.Lock()
		u.done[d]++
		u.mu.Unlock()
	}
}

// counts returns copies of the started and completed GETs per digest.
func (u *pacedUpstream) counts() (started, done map[string]int) {
	u.mu.Lock()
	defer u.mu.Unlock()
	started, done = map[string]int{}, map[string]int{}
	for k, v := range u.started {
		started[k] = v
	}
	for k, v := range u.done {
		done[k] = v
	}
	return started, done
}

type pacedWriter struct {
	http.ResponseWriter
	chunk int
	pause time.Duration
	ctx   context.Context //nolint:containedctx // the request's, for the pauses
	err   error
	// onBody is called once when the response is a 200 or 206.
	onBody      func()
	wroteHeader bool
}

func (w *pacedWriter) WriteHeader(code int) {
	if w.wroteHeader {
		return
	}
	w.wroteHeader = true
	if (code == http.StatusOK || code == http.StatusPartialContent) && w.onBody != nil {
		w.onBody()
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *pacedWriter) Write(b []byte) (int, error) {
	w.WriteHeader(http.StatusOK) // an implicit 200; ignored by net/http after an explicit status
	n := 0
	for len(b) > 0 && w.err == nil {
		c := min(len(b), w.chunk)
		var m int
		m, w.err = w.ResponseWriter.Write(b[:c])
		n += m
		b = b[c:]
		if f, ok := w.ResponseWriter.(http.Flusher); ok {
			f.Flush()
		}
		select {
		case <-w.ctx.Done():
			w.err = w.ctx.Err()
		case <-time.After(w.pause):
		}
	}
	return n, w.err
}

// startPacedUpstream serves a real registry with team/big:v1 (layers of
// layerSize bytes) and team/slow:v1, and returns it with its URL and the
// blob digests of team/big:v1 (config and layers).
func startPacedUpstream(t *testing.T, layers int64, layerSize int64) (*pacedUpstream, string, []string) {
	t.Helper()
	u := &pacedUpstream{next: registry.New(registry.Logger(log.New(io.Discard, "", 0))), chunk: 16 << 10,
		pause: 40 * time.Millisecond, started: map[string]int{}, done: map[string]int{}}
	srv := httptest.NewServer(u)
	t.Cleanup(srv.Close)
	var blobs []string
	for _, repo := range []string{"team/big:v1", "team/slow:v1"} {
		img := pushImage(t, srv.URL, repo, layerSize, layers, remote.WithTransport(srv.Client().Transport))
		if repo != "team/big:v1" {
			continue
		}
		cfg, _ := img.ConfigName()
		blobs = append(blobs, cfg.String())
		ls, _ := img.Layers()
		for _, l := range ls {
			d, _ := l.Digest()
			blobs = append(blobs, d.String())
		}
	}
	return u, srv.URL, blobs
}

// jobsAPI talks to one replica's admin API.
type jobsAPI struct {
	t    *testing.T
	addr string
}

const jobsToken = "jobs-test-token-0123456789"

func (a jobsAPI) do(method, path, body string, out any) int {
	a.t.Helper()
	ctx, cancel := context.WithTimeout(a.t.Context(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, "http://"+a.addr+path, strings.NewReader(body))
	if err != nil {
		a.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+jobsToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0 // a replica being killed or started
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if out != nil {
		_ = json.Unmarshal(b, out)
	}
	return resp.StatusCode
}

// wait polls a job on this replica until ok (bounded by limit).
func (a jobsAPI) wait(id, what string, limit time.Duration, ok func(prefetch.Job) bool) prefetch.Job {
	a.t.Helper()
	deadline := time.Now().Add(limit)
	var j prefetch.Job
	for time.Now().Before(deadline) {
		j = prefetch.Job{}
		if a.do(http.MethodGet, "/api/v1/prefetch/"+id, "", &j) == http.StatusOK && ok(j) {
			return j
		}
		time.Sleep(100 * time.Millisecond)
	}
	a.t.Fatalf("job %s never %s on %s within %s; last: %+v", id, what, a.addr, limit, j)
	return j
}

// TestSharedJobsSurviveKill runs real "serve" processes sharing one cache
// directory and the real Redis, in front of a real, paced registry. A job
// submitted on A (alone at first) is seen running with progress on B and
// C; A is SIGKILLed in the middle: another replica resumes the job, which
// ends succeeded and complete, with no blob downloaded twice except those
// being downloaded at the kill. A second job is submitted on B and
// cancelled from C. After every replica is stopped, a new one still shows
// both jobs.
func TestSharedJobsSurviveKill(t *testing.T) {
	if testing.Short() {
		t.Skip("starts and kills subprocesses")
	}
	needRealRedis(t)
	up, upURL, blobs := startPacedUpstream(t, 10, 384<<10)
	ns := randomNamespace("jobs-test-")
	dropNamespace(t, ns)
	dir := t.TempDir()
	root := filepath.Join(dir, "cache")
	cfgFile := writeConfig(t, dir, fmt.Sprintf(`upstreams:
  docker.io:
    endpoints: [%q]
    internal: true
redis:
  addr: 127.0.0.1:6379
  namespace: %s
admin:
  token_env: STOWAGE_TEST_JOBS_TOKEN
prefetch:
  concurrency: 2
log:
  level: warn
`, upURL, ns))
	t.Setenv("STOWAGE_TEST_JOBS_TOKEN", jobsToken)
	serve := func() (*proxyProcess, jobsAPI) {
		p, addr := serveProcess(t, "--config", cfgFile, "--root", root)
		return p, jobsAPI{t: t, addr: addr}
	}

	pa, a := serve()
	var job prefetch.Job
	if code := a.do(http.MethodPost, "/api/v1/prefetch?name=big", "docker.io/team/big:v1", &job); code != http.StatusAccepted {
		t.Fatalf("POST on A: %d", code)
	}
	first := a.wait(job.ID, "ran on A", 20*time.Second, func(j prefetch.Job) bool {
		return j.State == prefetch.JobRunning && j.Progress.BytesDone > 0
	})
	pb, b := serve()
	pc, c := serve()
	seen := b.wait(job.ID, "showed progress on B", 20*time.Second, func(j prefetch.Job) bool {
		return j.State == prefetch.JobRunning && j.Runner == first.Runner && j.Progress.BytesDone > first.Progress.BytesDone
	})
	t.Logf("B sees the job run by A: %d of %d bytes", seen.Progress.BytesDone, seen.Progress.BytesPlanned)
	var list struct {
		Jobs    []prefetch.Job `json:"jobs"`
		Warning string         `json:"warning"`
	}
	if c.do(http.MethodGet, "/api/v1/prefetch", "", &list); len(list.Jobs) != 1 || list.Jobs[0].State != prefetch.JobRunning || list.Warning != "" {
		t.Fatalf("list on C: %+v", list)
	}

	// Kill A once some blobs are in and most are not.
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, done := up.counts()
		if len(done) >= 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the upstream never completed 3 blobs")
		}
		time.Sleep(20 * time.Millisecond)
	}
	pa.kill()
	startedAtKill, doneAtKill := up.counts()
	var inFlight []string
	for d := range startedAtKill {
		if doneAtKill[d] == 0 {
			inFlight = append(inFlight, d)
		}
	}
	t.Logf("A killed with %d of %d blobs downloaded, %d in flight", len(doneAtKill), len(blobs), len(inFlight))
	if len(doneAtKill) == len(blobs) {
		t.Fatal("every blob was already downloaded at the kill: the test proves nothing")
	}

	// Another replica resumes it (after A's job lease, and the fill leases
	// of A's blobs in flight, expire).
	killed := time.Now()
	resumed := c.wait(job.ID, "resumed", 30*time.Second, func(j prefetch.Job) bool { return j.Runs >= 2 })
	t.Logf("resumed by %q %s after the kill (job lease 10 s, claim pass 2 s)", resumed.Runner, time.Since(killed).Round(time.Millisecond))
	end := c.wait(job.ID, "ended after the kill", 120*time.Second, func(j prefetch.Job) bool { return j.State.Done() })
	t.Logf("resumed by another replica and ended %s after the kill: %s, runs %d", time.Since(killed).Round(time.Millisecond), end.State, end.Runs)
	if end.State != prefetch.JobSucceeded || !end.Complete || end.Report == nil || end.Runs < 2 || end.Runner == first.Runner {
		t.Fatalf("after the kill: state %s complete %v runs %d runner %q (A was %q) error %q",
			end.State, end.Complete, end.Runs, end.Runner, first.Runner, end.Error)
	}
	started, _ := up.counts()
	for _, d := range blobs {
		n := started[d]
		switch {
		case n == 0:
			t.Errorf("blob %s never downloaded", d)
		case n == 2 && slices.Contains(inFlight, d):
			t.Logf("blob %s downloaded twice (in flight at the kill)", d)
		case n > 1:
			t.Errorf("blob %s downloaded %d times (in flight at the kill: %v)", d, n, slices.Contains(inFlight, d))
		}
	}

	// A second job, submitted on B, cancelled from C.
	var j2 prefetch.Job
	if code := b.do(http.MethodPost, "/api/v1/prefetch?name=slow", "docker.io/team/slow:v1", &j2); code != http.StatusAccepted {
		t.Fatalf("POST on B: %d", code)
	}
	c.wait(j2.ID, "ran", 20*time.Second, func(j prefetch.Job) bool {
		return j.State == prefetch.JobRunning && j.Progress.BytesDone > 0
	})
	if code := c.do(http.MethodDelete, "/api/v1/prefetch/"+j2.ID, "", nil); code != http.StatusAccepted {
		t.Fatalf("DELETE on C: %d", code)
	}
	asked := time.Now()
	b.wait(j2.ID, "cancelled", 10*time.Second, func(j prefetch.Job) bool { return j.State == prefetch.JobCancelled })
	t.Logf("cancelled on C, seen cancelled on B %s later", time.Since(asked).Round(time.Millisecond))

	// Every replica stops; a new one still shows both jobs.
	pb.kill()
	pc.kill()
	_, d := serve()
	got := d.wait(job.ID, "shown after a restart of all replicas", 10*time.Second, func(j prefetch.Job) bool { return j.State.Done() })
	if got.State != prefetch.JobSucceeded || !got.Complete || got.Report == nil {
		t.Fatalf("after the restart: %+v", got)
	}
	if d.do(http.MethodGet, "/api/v1/prefetch", "", &list); len(list.Jobs) != 2 || list.Jobs[0].State != prefetch.JobCancelled {
		t.Fatalf("list after the restart: %+v", list)
	}
}

// TestFollowThroughUnavailable: "prefetch --server" follows a job through
// a server that cannot reach the shared job list for a while (503, a
// scripted fault: Redis restarting), and gives up on other errors.
func TestFollowThroughUnavailable(t *testing.T) {
	var mu sync.Mutex
	gets := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		gets++
		n := gets
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		switch {
		case strings.HasSuffix(r.URL.Path, "/gone"):
			w.WriteHeader(http.StatusNotFound)
			_, _ = io.WriteString(w, `{"error":"no such job"}`)
		case n <= 3:
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = io.WriteString(w, `{"error":"prefetch: the cluster's shared job list (Redis) cannot be reached"}`)
		default:
			_, _ = io.WriteString(w, `{"id":"j1","state":"succeeded","complete":true}`)
		}
	}))
	t.Cleanup(srv.Close)
	t.Setenv("STOWAGE_ADMIN_TOKEN", "t")
	c, err := newAdminClient(srv.URL, "")
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	job, err := c.follow(t.Context(), "j1", 10*time.Millisecond, &stderr)
	if err != nil || job.State != prefetch.JobSucceeded || !job.Complete {
		t.Fatalf("follow: %+v %v", job, err)
	}
	if n := strings.Count(stderr.String(), "still following"); n != 1 {
		t.Fatalf("stderr: %q", stderr.String())
	}
	if _, err := c.follow(t.Context(), "gone", 10*time.Millisecond, io.Discard); err == nil || !strings.Contains(err.Error(), "404") {
		t.Fatalf("follow of an unknown job: %v", err)
	}
}

// TestScheduleOneJobPerTick: of the replicas whose schedules fire at the
// same tick, one submits the job (the first to claim the tick in Redis).
func TestScheduleOneJobPerTick(t *testing.T) {
	needRealRedis(t)
	cfg := config.Default()
	cfg.Redis.Addr = "127.0.0.1:6379"
	cfg.Redis.Namespace = randomNamespace("tick-test-")
	dropNamespace(t, cfg.Redis.Namespace)
	log := slog.New(slog.DiscardHandler)
	a, err := newSharedJobs(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	defer a.close()
	b, err := newSharedJobs(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	defer b.close()
	tick := time.Date(2026, 1, 1, 6, 0, 0, 0, time.UTC)
	if !a.firstForTick(tick) {
		t.Fatal("the first replica did not get the tick")
	}
	if b.firstForTick(tick.Add(20 * time.Second)) {
		t.Fatal("a second replica got the same tick")
	}
	if !b.firstForTick(tick.Add(time.Hour)) {
		t.Fatal("the next tick was not free")
	}
}

// dropNamespace removes a test namespace's keys from the shared Redis when
// the test ends (job records have no TTL).
func dropNamespace(t *testing.T, ns string) {
	t.Helper()
	t.Cleanup(func() {
		rc := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379"})
		defer rc.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		keys, err := rc.Keys(ctx, "stowage:"+ns+":*").Result()
		if err == nil && len(keys) > 0 {
			_ = rc.Del(ctx, keys...).Err()
		}
	})
}
