package prefetch_test

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/stowage/stowage/proxy/internal/testenv"
	"github.com/stowage/stowage/proxy/prefetch"
)

// TestProgressPerImage: the observer events move each image through
// queued, running, done or failed, with its bytes.
func TestProgressPerImage(t *testing.T) {
	t.Parallel()
	var p prefetch.Progress
	p.Planned(3)
	p.PlannedRefs([]string{"a", "b", "c"})
	p.ImageStarted("a")
	p.BlobsPlanned("a", 100)
	p.BlobProgress("a", 30)
	p.ImageStarted("b")
	p.BlobsPlanned("b", 10)
	p.BlobDone("b", 10, false)
	p.ImageDone(prefetch.ImageReport{Ref: "b"})
	p.ImageStarted("c")
	p.ImageDone(prefetch.ImageReport{Ref: "c", Error: "manifest unknown"})
	got := p.SnapshotImages().PerImage
	want := []prefetch.ImageProgress{
		{Ref: "a", State: prefetch.ImageRunning, BytesPlanned: 100, BytesDone: 30, BytesUpstream: 30},
		{Ref: "b", State: prefetch.ImageDone, BytesPlanned: 10, BytesDone: 10},
		{Ref: "c", State: prefetch.ImageFailed, Error: "manifest unknown"},
	}
	if len(got) != len(want) {
		t.Fatalf("per image: %+v", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("image %d: %+v, want %+v", i, got[i], want[i])
		}
	}
	if s := p.Snapshot(); s.PerImage != nil || s.BytesDone != 40 || s.ImagesFailed != 1 {
		t.Errorf("counters: %+v", s)
	}
	var q prefetch.Progress
	for i := range prefetch.MaxImageStates + 1 {
		q.ImageStarted(fmt.Sprintf("docker.io/team/app%d:v1", i))
	}
	if s := q.SnapshotImages(); len(s.PerImage) != prefetch.MaxImageStates || !s.ImagesTruncated {
		t.Errorf("%d images, truncated %v", len(s.PerImage), s.ImagesTruncated)
	}
}

// TestAdminAPIJobPerImage: while a job runs, GET /api/v1/prefetch/{id}
// shows where each image is: one done, one held downloading, one failed;
// the job list and the finished job (which has its report) do not.
func TestAdminAPIJobPerImage(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil, "")
	e.up.Push(t, "team/fast:v1", testenv.DockerImage(t, 1, 8<<10))
	e.up.Push(t, "team/slow:v1", testenv.DockerImage(t, 2, 8<<10))
	release := make(chan struct{})
	e.up.SetFault(testenv.HoldRepoBlobs("team/slow", release))
	srv, _ := adminServer(t, e, 1)
	refs := []string{"docker.io/team/fast:v1", "docker.io/team/slow:v1", "docker.io/team/gone:v1"}
	var j prefetch.Job
	body := refs[0] + "\n" + refs[1] + "\n" + refs[2] + "\n"
	if resp := call(t, http.MethodPost, srv.URL+"/api/v1/prefetch", testToken, "text/plain", body, &j); resp.StatusCode != http.StatusAccepted {
		t.Fatalf("post: %d", resp.StatusCode)
	}
	state := func(j prefetch.Job) map[string]prefetch.ImageProgress {
		m := map[string]prefetch.ImageProgress{}
		for _, p := range j.Progress.PerImage {
			m[p.Ref] = p
		}
		return m
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		if time.Now().After(deadline) {
			close(release)
			t.Fatalf("never saw fast done, slow running, gone failed: %+v", j.Progress)
		}
		call(t, http.MethodGet, srv.URL+"/api/v1/prefetch/"+j.ID, testToken, "", "", &j)
		s := state(j)
		if j.State == prefetch.JobRunning && s[refs[0]].State == prefetch.ImageDone &&
			s[refs[1]].State == prefetch.ImageRunning && s[refs[2]].State == prefetch.ImageFailed {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	s := state(j)
	if f := s[refs[0]]; f.BytesPlanned <= 0 || f.BytesDone != f.BytesPlanned || f.Error != "" {
		t.Errorf("fast: %+v", f)
	}
	if sl := s[refs[1]]; sl.BytesPlanned <= 0 || sl.BytesDone >= sl.BytesPlanned {
		t.Errorf("slow: %+v", sl)
	}
	if g := s[refs[2]]; g.Error == "" {
		t.Errorf("gone: %+v", g)
	}
	var list struct{ Jobs []prefetch.Job }
	call(t, http.MethodGet, srv.URL+"/api/v1/prefetch", testToken, "", "", &list)
	if len(list.Jobs) != 1 || list.Jobs[0].Progress.PerImage != nil {
		t.Errorf("list: %+v", list)
	}
	close(release)
	j = waitJob(t, srv.URL, j.ID)
	if j.Progress.PerImage != nil || j.Report == nil || len(j.Report.Images) != 3 {
		t.Errorf("finished job: %+v", j)
	}
}
