package prefetch_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/stowage/stowage/proxy/cluster"
	"github.com/stowage/stowage/proxy/internal/testenv"
	"github.com/stowage/stowage/proxy/prefetch"
)

const sharedToken = "shared-test-token"

// replica is one in-process replica of a cluster: its own proxy and store
// over the shared cache directory, its own job runner sharing the job
// list in the real Redis, and its admin API over HTTP.
type replica struct {
	jobs *prefetch.Jobs
	url  string
}

func newReplica(t *testing.T, up *testenv.Registry, root, prefix string, parallel, maxPending int) *replica {
	t.Helper()
	rc, _ := testenv.Redis(t)
	return newReplicaWith(t, up, root, rc, prefix, parallel, maxPending)
}

// newReplicaWith is newReplica on the Redis of rc, with options for its
// leases (the timeout).
func newReplicaWith(t *testing.T, up *testenv.Registry, root string, rc redis.UniversalClient, prefix string, parallel, maxPending int,
	opts ...cluster.Option,
) *replica {
	t.Helper()
	e := newEnv(t, up, root)
	js, err := prefetch.NewJobs(e.engine(), parallel, 10)
	if err != nil {
		t.Fatal(err)
	}
	js.SetMaxPending(maxPending)
	return shareAndServe(t, js, redisJobs(t, rc, prefix, opts...))
}

// redisJobs returns the job list shared in the Redis of rc under prefix
// (leases of 30 s, job leases of 3 s).
func redisJobs(t *testing.T, rc redis.UniversalClient, prefix string, opts ...cluster.Option) *cluster.RedisJobs {
	t.Helper()
	l, err := cluster.NewRedisLeases(rc, prefix, 30*time.Second, opts...)
	if err != nil {
		t.Fatal(err)
	}
	shared, err := cluster.NewRedisJobs(l, 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return shared
}

// shareAndServe makes js share its job list through shared and serves its
// admin API over HTTP until the test ends.
func shareAndServe(t *testing.T, js *prefetch.Jobs, shared *cluster.RedisJobs) *replica {
	t.Helper()
	js.Share(shared)
	t.Cleanup(js.Close)
	h, err := prefetch.NewAdminHandler(js, prefetch.AdminOptions{Token: sharedToken})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return &replica{jobs: js, url: srv.URL}
}

// jobList is the answer of GET /api/v1/prefetch.
type jobList struct {
	Jobs    []prefetch.Job `json:"jobs"`
	Warning string         `json:"warning"`
}

// acall does one admin request and decodes the JSON answer.
func acall(t *testing.T, method, url, body string, out any) int {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+sharedToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if out != nil && len(b) > 0 {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: %d %s: %v", method, url, resp.StatusCode, b, err)
		}
	}
	return resp.StatusCode
}

// waitShared polls GET /api/v1/prefetch/{id} on r until ok says so (bounded).
func waitShared(t *testing.T, r *replica, id string, what string, ok func(prefetch.Job) bool) prefetch.Job {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var j prefetch.Job
	for time.Now().Before(deadline) {
		j = prefetch.Job{}
		if code := acall(t, http.MethodGet, r.url+"/api/v1/prefetch/"+id, "", &j); code == http.StatusOK && ok(j) {
			return j
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("job %s never %s; last: %+v", id, what, j)
	return j
}

// blobCounter counts the upstream's blob GETs per digest and paces them.
type blobCounter struct {
	mu   sync.Mutex
	gets map[string]int
	slow testenv.Fault
}

func (c *blobCounter) fault(w http.ResponseWriter, r *http.Request, next http.Handler) {
	if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/sha256:") {
		c.mu.Lock()
		c.gets[r.URL.Path[strings.LastIndex(r.URL.Path, "/")+1:]]++
		c.mu.Unlock()
	}
	c.slow(w, r, next)
}

func (c *blobCounter) total() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, v := range c.gets {
		n += v
	}
	return n
}

// TestSharedJobsAcrossReplicas: three replicas over one cache directory
// share the job list in the real Redis. A job submitted on A is seen with
// live progress on B, cancelled from C (its runner stops within about a
// second, every replica shows it cancelled), the queue cap holds for the
// cluster, and the next jobs end succeeded and complete on all three.
func TestSharedJobsAcrossReplicas(t *testing.T) {
	up := testenv.Start(t, testenv.Options{})
	refs, blobs := sharedImagesSized(t, up, 4, 256<<10, 128<<10)
	cnt := &blobCounter{gets: map[string]int{}, slow: testenv.SlowBlobs(8<<10, 100*time.Millisecond)}
	up.SetFault(cnt.fault)
	root := t.TempDir()
	rc, prefix := testenv.Redis(t)
	dropKeys(t, rc, prefix)
	a := newReplica(t, up, root, prefix, 1, 2)
	b := newReplica(t, up, root, prefix, 1, 2)
	c := newReplica(t, up, root, prefix, 1, 2)

	// Submit on A; B sees it run, with progress, and who runs it.
	var j prefetch.Job
	if code := acall(t, http.MethodPost, a.url+"/api/v1/prefetch?name=first", strings.Join(refs[:2], "\n"), &j); code != http.StatusAccepted {
		t.Fatalf("POST on A: %d", code)
	}
	running := waitShared(t, b, j.ID, "showed progress on B", func(j prefetch.Job) bool {
		return j.State == prefetch.JobRunning && j.Progress.BytesDone > 0 && j.Runner != ""
	})
	t.Logf("B sees job %s run by %s: %d of %d bytes", j.ID, running.Runner, running.Progress.BytesDone, running.Progress.BytesPlanned)
	var list jobList
	if acall(t, http.MethodGet, c.url+"/api/v1/prefetch", "", &list); len(list.Jobs) != 1 || list.Jobs[0].ID != j.ID || list.Warning != "" {
		t.Fatalf("list on C: %+v", list)
	}

	// Cancel on C: the runner (whichever replica) stops within about a
	// second; every replica shows it cancelled.
	var cj prefetch.Job
	if code := acall(t, http.MethodDelete, c.url+"/api/v1/prefetch/"+j.ID, "", &cj); code != http.StatusAccepted {
		t.Fatalf("DELETE on C: %d %+v", code, cj)
	}
	start := time.Now()
	for _, r := range []*replica{a, b, c} {
		waitShared(t, r, j.ID, "cancelled", func(j prefetch.Job) bool { return j.State == prefetch.JobCancelled })
	}
	t.Logf("cancelled everywhere %s after the DELETE", time.Since(start).Round(time.Millisecond))
	if code := acall(t, http.MethodDelete, a.url+"/api/v1/prefetch/"+j.ID, "", nil); code != http.StatusConflict {
		t.Fatalf("DELETE of an ended job: %d, want 409", code)
	}
	// The runner stopped: no new upstream blob GETs once it is cancelled.
	time.Sleep(300 * time.Millisecond)
	before := cnt.total()
	time.Sleep(1500 * time.Millisecond)
	if after := cnt.total(); after != before {
		t.Fatalf("upstream blob GETs went on after the cancel: %d -> %d", before, after)
	}

	// The queue cap holds for the cluster: two jobs, whichever replica.
	// The second one's image is one no job fetched yet (refs[0] may be
	// cached whole by now, and a job of cached images ends at once).
	var j2, j3 prefetch.Job
	if code := acall(t, http.MethodPost, b.url+"/api/v1/prefetch?name=all", strings.Join(refs, "\n"), &j2); code != http.StatusAccepted {
		t.Fatalf("POST on B: %d", code)
	}
	if code := acall(t, http.MethodPost, c.url+"/api/v1/prefetch?name=again", refs[3], &j3); code != http.StatusAccepted {
		t.Fatalf("POST on C: %d", code)
	}
	if code := acall(t, http.MethodPost, a.url+"/api/v1/prefetch?name=third", refs[1], nil); code != http.StatusTooManyRequests {
		t.Fatalf("POST on A past the cluster cap of 2: %d, want 429", code)
	}
	for _, id := range []string{j2.ID, j3.ID} {
		for _, r := range []*replica{a, b, c} {
			done := waitShared(t, r, id, "ended", func(j prefetch.Job) bool { return j.State.Done() })
			if done.State != prefetch.JobSucceeded || !done.Complete || done.Report == nil {
				t.Fatalf("job %s on a replica: %s complete=%v report=%v error=%q", id, done.State, done.Complete, done.Report != nil, done.Error)
			}
		}
	}
	// (One download per blob across replicas is the fill coordinator's
	// business, not wired in these in-process replicas: see
	// cmd/proxy TestSharedJobsSurviveKill for the real binaries.)
	if n := cnt.total(); n < blobs {
		t.Errorf("%d blob GETs for %d blobs", n, blobs)
	}
	if acall(t, http.MethodGet, a.url+"/api/v1/prefetch", "", &list); len(list.Jobs) != 3 {
		t.Fatalf("list on A: %d jobs, want 3", len(list.Jobs))
	}
}

// TestSharedJobsRedisUnreachable: with the shared list unreachable, a job
// is still accepted and run on this replica, the list says clearly that
// it shows this replica's jobs only, and a job unknown here is a 503 (not
// a 404: it may well exist).
func TestSharedJobsRedisUnreachable(t *testing.T) {
	up := testenv.Start(t, testenv.Options{})
	refs, _ := sharedImages(t, up, 1)
	e := newEnv(t, up, "")
	js, err := prefetch.NewJobs(e.engine(), 1, 10)
	if err != nil {
		t.Fatal(err)
	}
	// A port nobody listens on: Redis refuses every connection.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	rc := cluster.NewRedisClient(addr, "", 0, 200*time.Millisecond)
	t.Cleanup(func() { _ = rc.Close() })
	r := shareAndServe(t, js, redisJobs(t, rc, "p:", cluster.WithTimeout(200*time.Millisecond)))

	var j prefetch.Job
	if code := acall(t, http.MethodPost, r.url+"/api/v1/prefetch", refs[0], &j); code != http.StatusAccepted {
		t.Fatalf("POST with Redis unreachable: %d", code)
	}
	done := waitShared(t, r, j.ID, "ended", func(j prefetch.Job) bool { return j.State.Done() })
	if done.State != prefetch.JobSucceeded || !done.Complete {
		t.Fatalf("local job: %s complete=%v %q", done.State, done.Complete, done.Error)
	}
	var list jobList
	acall(t, http.MethodGet, r.url+"/api/v1/prefetch", "", &list)
	if len(list.Jobs) != 1 || !strings.Contains(list.Warning, "shared job list") {
		t.Fatalf("list: %+v", list)
	}
	var e503 struct{ Error string }
	if code := acall(t, http.MethodGet, r.url+"/api/v1/prefetch/0123456789abcdef", "", &e503); code != http.StatusServiceUnavailable ||
		!bytes.Contains([]byte(e503.Error), []byte("cannot be reached")) {
		t.Fatalf("GET of a job unknown here: %d %q", code, e503.Error)
	}
}

// TestSharedJobsRedisStops: a real redis-server is stopped (SIGSTOP: it
// hangs) while a job runs on A, for longer than the job's lease. Nothing
// the admin API is asked fails: the list answers this replica's jobs with
// a warning, a new job runs on the replica that received it, the running
// job goes on. When Redis answers again the job's heartbeat takes its
// lease back (nobody could take it meanwhile) and its end is recorded
// once, seen from B, run once.
func TestSharedJobsRedisStops(t *testing.T) {
	srv := testenv.StartRedisServer(t)
	up := testenv.Start(t, testenv.Options{})
	refs, _ := sharedImagesSized(t, up, 3, 256<<10, 128<<10)
	cnt := &blobCounter{gets: map[string]int{}, slow: testenv.SlowBlobs(8<<10, 100*time.Millisecond)}
	up.SetFault(cnt.fault)
	root := t.TempDir()
	const timeout = 200 * time.Millisecond
	client := func() *redis.Client {
		rc := cluster.NewRedisClient(srv.Addr, "", 0, timeout)
		t.Cleanup(func() { _ = rc.Close() })
		return rc
	}
	a := newReplicaWith(t, up, root, client(), "p:", 1, 4, cluster.WithTimeout(timeout), cluster.WithBackoff(time.Second))
	b := newReplicaWith(t, up, root, client(), "p:", 1, 4, cluster.WithTimeout(timeout), cluster.WithBackoff(time.Second))

	var j prefetch.Job
	if code := acall(t, http.MethodPost, a.url+"/api/v1/prefetch?name=first", strings.Join(refs[:2], "\n"), &j); code != http.StatusAccepted {
		t.Fatalf("POST on A: %d", code)
	}
	running := waitShared(t, b, j.ID, "ran", func(j prefetch.Job) bool {
		return j.State == prefetch.JobRunning && j.Progress.BytesDone > 0
	})

	srv.Stop()
	stopped := time.Now()
	var list jobList
	start := time.Now()
	if code := acall(t, http.MethodGet, b.url+"/api/v1/prefetch", "", &list); code != http.StatusOK || list.Warning == "" {
		t.Fatalf("list on B with Redis stopped: %d %+v", code, list)
	}
	t.Logf("list on B with Redis stopped: %s, warning %q", time.Since(start).Round(time.Millisecond), list.Warning)
	var local prefetch.Job
	start = time.Now()
	if code := acall(t, http.MethodPost, b.url+"/api/v1/prefetch?name=local", refs[2], &local); code != http.StatusAccepted {
		t.Fatalf("POST on B with Redis stopped: %d", code)
	}
	t.Logf("POST on B with Redis stopped: %s", time.Since(start).Round(time.Millisecond))
	done := waitShared(t, b, local.ID, "ended on B", func(j prefetch.Job) bool { return j.State.Done() })
	if done.State != prefetch.JobSucceeded || !done.Complete {
		t.Fatalf("B's local job: %s complete=%v %q", done.State, done.Complete, done.Error)
	}
	// The job, asked on the replica that runs it (A, or B when B's claim
	// loop took it first), is answered from there while Redis is stopped;
	// the other one answers 503.
	codeA := acall(t, http.MethodGet, a.url+"/api/v1/prefetch/"+j.ID, "", nil)
	codeB := acall(t, http.MethodGet, b.url+"/api/v1/prefetch/"+j.ID, "", nil)
	if (codeA == http.StatusOK) == (codeB == http.StatusOK) {
		t.Fatalf("GET of the running job with Redis stopped: %d on A, %d on B; want 200 on its runner only", codeA, codeB)
	}
	t.Logf("GET of the running job with Redis stopped: %d on A, %d on B", codeA, codeB)
	// Longer than the job's lease (3 s in these replicas).
	time.Sleep(time.Until(stopped.Add(4 * time.Second)))
	srv.Cont()

	end := waitShared(t, b, j.ID, "ended", func(j prefetch.Job) bool { return j.State.Done() })
	// Redis kept its clock while stopped, so the job's lease has expired
	// when it answers again: the runner's heartbeat takes it back, or the
	// other replica's claim loop is first and resumes the job (the first
	// runner then stops). Either way it ends once, succeeded and complete.
	kept := end.Runs == 1 && end.Runner == running.Runner
	resumed := end.Runs == 2 && end.Runner != running.Runner
	if end.State != prefetch.JobSucceeded || !end.Complete || (!kept && !resumed) {
		t.Fatalf("after Redis came back: %s complete=%v runs=%d runner=%q (was %q) %q",
			end.State, end.Complete, end.Runs, end.Runner, running.Runner, end.Error)
	}
	t.Logf("after Redis came back: runs=%d, kept by its runner: %v", end.Runs, kept)
	// The breaker lets one call probe at a time: the warning goes within
	// a few of its windows.
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		list.Jobs, list.Warning = nil, ""
		if acall(t, http.MethodGet, b.url+"/api/v1/prefetch", "", &list); list.Warning == "" {
			break
		}
	}
	if list.Warning != "" || len(list.Jobs) != 2 {
		t.Fatalf("list on B after Redis came back: %+v (want the shared job and B's local one)", list)
	}
}

// TestSharedJobUnreadableRequest: a job whose request cannot be read (a
// record from an incompatible version) is ended as failed with the reason
// by the replica that claims it, not claimed again and again.
func TestSharedJobUnreadableRequest(t *testing.T) {
	up := testenv.Start(t, testenv.Options{})
	rc, prefix := testenv.Redis(t)
	dropKeys(t, rc, prefix)
	a := newReplicaWith(t, up, t.TempDir(), rc, prefix, 1, 4)
	writer := redisJobs(t, rc, prefix)
	if ok, err := writer.Add(t.Context(), "0123456789abcdef", time.Now(), []byte(`{"id":"0123456789abcdef","name":"old","state":"queued"}`),
		[]byte(`{"lists":[{"name":"x","rules":[{"kind":1,"pattern":"("}]}]}`), 0); !ok || err != nil {
		t.Fatalf("Add: %v %v", ok, err)
	}
	j := waitShared(t, a, "0123456789abcdef", "ended", func(j prefetch.Job) bool { return j.State.Done() })
	if j.State != prefetch.JobFailed || !strings.Contains(j.Error, "cannot be read") || j.Name != "old" {
		t.Fatalf("%+v", j)
	}
}

// dropKeys removes the test's keys from the shared Redis when it ends
// (job records have no TTL).
func dropKeys(t *testing.T, rc *redis.Client, prefix string) {
	t.Helper()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		keys, err := rc.Keys(ctx, prefix+"*").Result()
		if err == nil && len(keys) > 0 {
			_ = rc.Del(ctx, keys...).Err()
		}
	})
}
