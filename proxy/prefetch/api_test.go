package prefetch_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stowage/stowage/proxy/internal/testenv"
	"github.com/stowage/stowage/proxy/prefetch"
)

const testToken = "s3cret-token"

func adminServer(t *testing.T, e *env, parallel int) (*httptest.Server, *prefetch.Jobs) {
	t.Helper()
	jobs, err := prefetch.NewJobs(e.engine(), parallel, 10)
	if err != nil {
		t.Fatal(err)
	}
	h, err := prefetch.NewAdminHandler(jobs, prefetch.AdminOptions{Token: testToken,
		Check: func(l []prefetch.NamedList) error { return prefetch.CheckRegistries(e.cfg, l) }})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(func() {
		srv.Close()
		jobs.Close()
	})
	return srv, jobs
}

func call(t *testing.T, method, url, token, ctype, body string, out any) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if out != nil && resp.StatusCode/100 == 2 {
		if err := json.Unmarshal(data, out); err != nil {
			t.Fatalf("%s %s: %v: %s", method, url, err, data)
		}
	}
	return resp
}

func waitJob(t *testing.T, base, id string) prefetch.Job {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		var j prefetch.Job
		if resp := call(t, http.MethodGet, base+"/api/v1/prefetch/"+id, testToken, "", "", &j); resp.StatusCode != 200 {
			t.Fatalf("get job: %d", resp.StatusCode)
		}
		if j.State.Done() {
			return j
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("job %s did not end", id)
	return prefetch.Job{}
}

func TestAdminAPIAuth(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil, "")
	srv, _ := adminServer(t, e, 1)
	for _, tc := range []struct {
		name, method, path, token string
	}{
		{"no token list", http.MethodGet, "/api/v1/prefetch", ""},
		{"wrong token list", http.MethodGet, "/api/v1/prefetch", "wrong"},
		{"prefix of token", http.MethodGet, "/api/v1/prefetch", testToken[:4]},
		{"no token post", http.MethodPost, "/api/v1/prefetch", ""},
		{"wrong token job", http.MethodGet, "/api/v1/prefetch/abc", "x" + testToken},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp := call(t, tc.method, srv.URL+tc.path, tc.token, "", "alpine:3", nil)
			if resp.StatusCode != http.StatusUnauthorized || !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer ") {
				t.Fatalf("%d %v", resp.StatusCode, resp.Header)
			}
		})
	}
	if _, err := prefetch.NewAdminHandler(nil, prefetch.AdminOptions{}); !errors.Is(err, prefetch.ErrNoToken) {
		t.Fatalf("no token: %v", err)
	}
	for _, tc := range []struct{ ctype, body string }{
		{"text/plain", "# only a comment\n"},
		{"text/plain", "unknown.example/x:1\n"}, // registry not configured
		{"application/json", `{"images":[]}`},
		{"application/json", `{"images":["a:1"],"bogus":1}`},
		{"application/json", `{"images":["docker.io/a:1"],"platforms":["/"]}`},
	} {
		if resp := call(t, http.MethodPost, srv.URL+"/api/v1/prefetch", testToken, tc.ctype, tc.body, nil); resp.StatusCode != http.StatusBadRequest {
			t.Errorf("%q: %d, want 400", tc.body, resp.StatusCode)
		}
	}
	if resp := call(t, http.MethodGet, srv.URL+"/api/v1/prefetch/nope", testToken, "", "", nil); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("unknown job: %d", resp.StatusCode)
	}
}

// TestAdminAPIJobs: a list body and a JSON body become jobs that run (no
// more than the bound at once), report, and are listed; overlapping jobs
// share the fills.
func TestAdminAPIJobs(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil, "")
	refs, unique := sharedImages(t, e.up, 6)
	e.up.ResetCounts()
	e.up.SetFault(testenv.SlowBlobs(8<<10, 2*time.Millisecond))
	srv, jobs := adminServer(t, e, 2)

	var ids []string
	bodies := []struct{ ctype, body string }{
		{"text/plain", strings.Join(refs[:3], "\n")},
		{"application/yaml", "docker.io:\n  images:\n    team/app3: [v1]\n    team/app4: [v1]\n"},
		{"application/json", `{"name":"json-job","images":["` + strings.Join(refs[3:], `","`) + `"]}`},
	}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	maxRunning := 0
	wg.Add(1)
	go func() { // watch the bound
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
			n := 0
			for _, j := range jobs.List() {
				if j.State == prefetch.JobRunning {
					n++
				}
			}
			maxRunning = max(maxRunning, n)
		}
	}()
	for _, b := range bodies {
		var j prefetch.Job
		resp := call(t, http.MethodPost, srv.URL+"/api/v1/prefetch?platform=linux/amd64", testToken, b.ctype, b.body, &j)
		if resp.StatusCode != http.StatusAccepted || j.ID == "" || resp.Header.Get("Location") != "/api/v1/prefetch/"+j.ID {
			t.Fatalf("post: %d %+v", resp.StatusCode, j)
		}
		ids = append(ids, j.ID)
	}
	for _, id := range ids {
		j := waitJob(t, srv.URL, id)
		if j.State != prefetch.JobSucceeded || j.Report == nil || !j.Report.OK() || j.Progress.ImagesDone != j.Progress.Images {
			t.Fatalf("job %s: %+v", id, j)
		}
	}
	close(stop)
	wg.Wait()
	if maxRunning > 2 {
		t.Fatalf("%d jobs ran at once, bound is 2", maxRunning)
	}
	if got := e.up.Count(testenv.BlobGet); got != unique {
		t.Fatalf("blob GETs = %d, want %d", got, unique)
	}
	var list struct{ Jobs []prefetch.Job }
	call(t, http.MethodGet, srv.URL+"/api/v1/prefetch", testToken, "", "", &list)
	if len(list.Jobs) != 3 || list.Jobs[0].Report != nil {
		t.Fatalf("list: %+v", list)
	}
	if _, err := e.store.GetPin(t.Context(), "json-job"); err != nil {
		t.Fatalf("json job pin: %v", err)
	}
}

// TestJobsPersist: job records kept in the store outlive the job runner:
// a new runner (a restarted server) answers for finished jobs with their
// reports, shows a job that never ended as failed, and forgets (and
// deletes) the oldest beyond its bound.
func TestJobsPersist(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil, "")
	refs, _ := sharedImages(t, e.up, 3)
	ctx := t.Context()
	wait := func(js *prefetch.Jobs, id string) prefetch.Job {
		t.Helper()
		for range 1500 {
			if j, ok := js.Get(id); ok && j.State.Done() {
				return j
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Fatalf("job %s did not end", id)
		return prefetch.Job{}
	}
	records := func() map[string][]byte {
		t.Helper()
		recs, err := e.store.Records(ctx, "jobs")
		if err != nil {
			t.Fatal(err)
		}
		return recs
	}

	first, err := prefetch.NewJobs(e.engine(), 1, 2)
	if err != nil {
		t.Fatal(err)
	}
	if err := first.Persist(ctx, e.store); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for i, ref := range refs {
		j, err := first.Submit(fmt.Sprintf("job-%d", i), prefetch.Request{Images: []string{ref}})
		if err != nil {
			t.Fatal(err)
		}
		if j := wait(first, j.ID); j.State != prefetch.JobSucceeded {
			t.Fatalf("job %d: %+v", i, j)
		}
		ids = append(ids, j.ID)
	}
	first.Close()
	if recs := records(); len(recs) != 2 || recs[ids[0]] != nil {
		t.Fatalf("records after 3 jobs with keep 2: %d (first kept: %v)", len(recs), recs[ids[0]] != nil)
	}
	// A record left by a process that stopped while its job was running.
	crashed, _ := json.Marshal(prefetch.Job{ID: "c0ffee", Name: "crashed", State: prefetch.JobRunning, Created: time.Now().UTC()})
	if err := e.store.PutRecord(ctx, "jobs", "c0ffee", crashed); err != nil {
		t.Fatal(err)
	}

	second, err := prefetch.NewJobs(e.engine(), 1, 3)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(second.Close)
	if err := second.Persist(ctx, e.store); err != nil {
		t.Fatal(err)
	}
	if list := second.List(); len(list) != 3 || list[0].ID != "c0ffee" {
		t.Fatalf("restored jobs: %+v", list)
	}
	for _, id := range ids[1:] {
		j, ok := second.Get(id)
		if !ok || j.State != prefetch.JobSucceeded || j.Report == nil || !j.Report.OK() || j.Progress.ImagesDone != 1 {
			t.Fatalf("restored job %s: %v %+v", id, ok, j)
		}
	}
	if j, _ := second.Get("c0ffee"); j.State != prefetch.JobFailed || !strings.Contains(j.Error, "interrupted") {
		t.Fatalf("interrupted job: %+v", j)
	}
	// One more job: the oldest restored one goes, record and all.
	j, err := second.Submit("again", prefetch.Request{Images: []string{refs[0]}})
	if err != nil {
		t.Fatal(err)
	}
	wait(second, j.ID)
	if recs := records(); len(recs) != 3 || recs[ids[1]] != nil || recs[j.ID] == nil {
		var names []string
		for n := range recs {
			names = append(names, n)
		}
		t.Fatalf("records after a 4th job with keep 3: %v (restored %v, new %s)", names, ids[1:], j.ID)
	}
}
