package prefetch_test

import (
	"net/http"
	"testing"

	"github.com/stowage/stowage/proxy/internal/testenv"
	"github.com/stowage/stowage/proxy/prefetch"
)

// TestAdminAPIQueueBoundAndCancel: past the cap on jobs not yet ended a
// new job is refused with 429 and Retry-After; DELETE cancels a queued and
// a running job (the running one stuck on a stalled upstream), which end
// as cancelled and free their places; an ended job answers 409, an
// unknown one 404.
func TestAdminAPIQueueBoundAndCancel(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil, "")
	refs, _ := sharedImages(t, e.up, 3)
	release := make(chan struct{})
	defer close(release)
	e.up.SetFault(testenv.StallBlobs(1024, release))
	srv, jobs := adminServer(t, e, 1)
	jobs.SetMaxPending(2)
	post := func(ref string) (*http.Response, prefetch.Job) {
		var j prefetch.Job
		resp := call(t, http.MethodPost, srv.URL+"/api/v1/prefetch", testToken, "text/plain", ref, &j)
		return resp, j
	}
	r1, running := post(refs[0])
	r2, queued := post(refs[1])
	if r1.StatusCode != http.StatusAccepted || r2.StatusCode != http.StatusAccepted {
		t.Fatalf("first two jobs: %d %d, want 202", r1.StatusCode, r2.StatusCode)
	}
	if r3, _ := post(refs[2]); r3.StatusCode != http.StatusTooManyRequests || r3.Header.Get("Retry-After") == "" {
		t.Fatalf("job past the cap: %d (Retry-After %q), want 429 with Retry-After", r3.StatusCode, r3.Header.Get("Retry-After"))
	}
	del := func(id string) int {
		return call(t, http.MethodDelete, srv.URL+"/api/v1/prefetch/"+id, testToken, "", "", nil).StatusCode
	}
	for _, j := range []prefetch.Job{queued, running} {
		if got := del(j.ID); got != http.StatusAccepted {
			t.Fatalf("DELETE job: %d, want 202", got)
		}
		if got := waitJob(t, srv.URL, j.ID); got.State != prefetch.JobCancelled {
			t.Fatalf("cancelled job ended %s (%s)", got.State, got.Error)
		}
	}
	if got := del(running.ID); got != http.StatusConflict {
		t.Fatalf("DELETE of an ended job: %d, want 409", got)
	}
	if got := del("nope"); got != http.StatusNotFound {
		t.Fatalf("DELETE of an unknown job: %d, want 404", got)
	}
	if r, _ := post(refs[2]); r.StatusCode != http.StatusAccepted {
		t.Fatalf("job after the cancellations: %d, want 202", r.StatusCode)
	}
}
