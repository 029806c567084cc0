package cluster

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/stowage/stowage/proxy/internal/jobclaim"
)

func newJobs(t *testing.T, l *RedisLeases, ttl time.Duration) *RedisJobs {
	t.Helper()
	j, err := NewRedisJobs(l, ttl)
	if err != nil {
		t.Fatal(err)
	}
	return j
}

// TestRedisJobsLifecycle walks one job through the real Redis as two
// replicas see it: the cluster-wide cap, one lease holder, heartbeats that
// publish and carry the cancel flag, an expired lease taken over, the end
// recorded only by the holder and never claimed again, and trimming.
func TestRedisJobsLifecycle(t *testing.T) {
	c := needRedis(t)
	ctx := t.Context()
	prefix := testPrefix(t)
	other := testPrefix(t)
	t.Cleanup(func() {
		for _, p := range []string{prefix, other} {
			if keys, err := c.Keys(context.Background(), p+"*").Result(); err == nil && len(keys) > 0 {
				_ = c.Del(context.Background(), keys...).Err()
			}
		}
	})
	a := newJobs(t, newLeases(t, c, prefix, time.Second), time.Second)
	b := newJobs(t, newLeases(t, c, prefix, time.Second), time.Second)
	otherJobs := newJobs(t, newLeases(t, c, other, time.Second), time.Second)
	now := time.Now()

	if ok, err := a.Add(ctx, "j1", now, []byte(`{"id":"j1","state":"queued"}`), []byte(`{"images":["x"]}`), 2); !ok || err != nil {
		t.Fatalf("Add j1: %v %v", ok, err)
	}
	if ok, err := b.Add(ctx, "j2", now.Add(time.Millisecond), []byte(`{"id":"j2"}`), []byte(`{}`), 2); !ok || err != nil {
		t.Fatalf("Add j2: %v %v", ok, err)
	}
	if ok, err := a.Add(ctx, "j3", now.Add(2*time.Millisecond), []byte(`{"id":"j3"}`), []byte(`{}`), 2); ok || err != nil {
		t.Fatalf("Add j3 past the cluster cap of 2: added=%v %v", ok, err)
	}
	if ok, _ := otherJobs.Add(ctx, "j9", now, []byte(`{}`), []byte(`{}`), 2); !ok {
		t.Fatal("another namespace shares the cap")
	}
	got, _, err := b.Get(ctx, "j1")
	if err != nil || string(got) != `{"id":"j1","state":"queued"}` {
		t.Fatalf("Get from the other replica: %s %v", got, err)
	}
	if req, err := b.Request(ctx, "j1"); err != nil || string(req) != `{"images":["x"]}` {
		t.Fatalf("Request: %s %v", req, err)
	}
	cands, err := b.Candidates(ctx)
	if err != nil || fmt.Sprint(cands) != "[{j1 false false} {j2 false false}]" {
		t.Fatalf("Candidates: %v %v", cands, err)
	}

	if ok, err := a.TryLease(ctx, "j1"); !ok || err != nil {
		t.Fatalf("TryLease on a: %v %v", ok, err)
	}
	if ok, _ := b.TryLease(ctx, "j1"); ok {
		t.Fatal("b took a lease a holds")
	}
	if beat, err := a.Beat(ctx, "j1", []byte(`{"id":"j1","state":"running","progress":{"bytes_done":5}}`)); err != nil || beat != (jobclaim.Beat{Held: true}) {
		t.Fatalf("Beat: %+v %v", beat, err)
	}
	if got, _, _ := b.Get(ctx, "j1"); string(got) != `{"id":"j1","state":"running","progress":{"bytes_done":5}}` {
		t.Fatalf("b sees %s", got)
	}
	if beat, _ := b.Beat(ctx, "j1", []byte(`{"bad":1}`)); beat.Held {
		t.Fatal("b's heartbeat on a's lease was accepted")
	}
	if got, _, _ := b.Get(ctx, "j1"); string(got) == `{"bad":1}` {
		t.Fatal("a heartbeat without the lease wrote the record")
	}
	cands, _ = b.Candidates(ctx)
	if len(cands) != 2 || !cands[0].Leased {
		t.Fatalf("Candidates with j1 leased: %v", cands)
	}

	// Cancel: flagged, the runner learns it at its next heartbeat.
	if st, err := b.RequestCancel(ctx, "j1"); st != "running" || err != nil {
		t.Fatalf("RequestCancel: %q %v", st, err)
	}
	if beat, _ := a.Beat(ctx, "j1", nil); !beat.Held || !beat.Cancel {
		t.Fatalf("Beat after cancel: %+v", beat)
	}
	if st, _ := b.RequestCancel(ctx, "nope"); st != "" {
		t.Fatalf("RequestCancel of an unknown job: %q", st)
	}

	// a's lease expires (a died): b takes over; a's late writes are refused.
	time.Sleep(1200 * time.Millisecond)
	if ok, err := b.TryLease(ctx, "j1"); !ok || err != nil {
		t.Fatalf("TryLease after expiry: %v %v", ok, err)
	}
	if beat, _ := a.Beat(ctx, "j1", []byte(`{"late":1}`)); beat.Held {
		t.Fatal("the old runner's heartbeat was accepted after the takeover")
	}
	if ok, _ := a.Finish(ctx, "j1", []byte(`{"late":1}`), "failed"); ok {
		t.Fatal("the old runner recorded an end after the takeover")
	}
	if ok, err := b.Finish(ctx, "j1", []byte(`{"id":"j1","state":"cancelled"}`), "cancelled"); !ok || err != nil {
		t.Fatalf("Finish: %v %v", ok, err)
	}
	if ok, _ := a.TryLease(ctx, "j1"); ok {
		t.Fatal("an ended job was leased again")
	}
	if beat, _ := a.Beat(ctx, "j1", nil); beat.Held {
		t.Fatal("an ended job's heartbeat was accepted")
	}
	if req, err := a.Request(ctx, "j1"); req != nil || err != nil {
		t.Fatalf("an ended job's request: %s %v", req, err)
	}
	if st, _ := a.RequestCancel(ctx, "j1"); st != "cancelled" {
		t.Fatalf("RequestCancel of an ended job: %q", st)
	}
	cands, _ = a.Candidates(ctx)
	if fmt.Sprint(cands) != "[{j2 false false}]" {
		t.Fatalf("Candidates after the end: %v", cands)
	}
	// The cap counts only jobs that have not ended.
	if ok, _ := a.Add(ctx, "j3", now.Add(2*time.Millisecond), []byte(`{"id":"j3"}`), []byte(`{}`), 2); !ok {
		t.Fatal("Add after an end: still full")
	}

	// A lease that expired while Redis did not answer is taken again by
	// its runner's next heartbeat when nobody else took it.
	if ok, _ := a.TryLease(ctx, "j2"); !ok {
		t.Fatal("TryLease j2")
	}
	time.Sleep(1200 * time.Millisecond)
	if beat, _ := a.Beat(ctx, "j2", nil); !beat.Held {
		t.Fatal("the runner did not take its expired, free lease back")
	}
	if err := a.Release(ctx, "j2"); err != nil {
		t.Fatal(err)
	}
	if ok, _ := b.TryLease(ctx, "j2"); !ok {
		t.Fatal("a released lease was not free")
	}

	list, err := b.List(ctx, 10)
	if err != nil || len(list) != 3 || string(list[0]) != `{"id":"j3"}` {
		t.Fatalf("List: %q %v", list, err)
	}
	// Trim keeps jobs that have not ended whatever their number.
	if err := a.Trim(ctx, 1); err != nil {
		t.Fatal(err)
	}
	list, _ = b.List(ctx, 10)
	if len(list) != 2 {
		t.Fatalf("after Trim(1): %q; want j2 and j3 (not ended)", list)
	}
	if _, found, _ := b.Get(ctx, "j1"); found {
		t.Fatal("the trimmed job is still there")
	}
}

// TestRedisJobsUnavailable: with Redis not answering every call says so
// (ErrUnavailable) within the timeout, instead of failing slowly or
// answering as if the list were empty.
func TestRedisJobsUnavailable(t *testing.T) {
	h := &hangingRedis{}
	c := h.client(t, 200*time.Millisecond)
	l := newLeases(t, c, testPrefix(t), time.Second, WithTimeout(200*time.Millisecond))
	j := newJobs(t, l, time.Second)
	ctx := t.Context()
	start := time.Now()
	if _, err := j.List(ctx, 10); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("List: %v", err)
	}
	if _, _, err := j.Get(ctx, "x"); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Get: %v", err)
	}
	if _, err := j.Add(ctx, "x", time.Now(), []byte(`{}`), []byte(`{}`), 1); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Add: %v", err)
	}
	if _, err := j.Candidates(ctx); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Candidates: %v", err)
	}
	t.Logf("4 calls to a hanging Redis took %s (one timeout, then the breaker)", time.Since(start).Round(time.Millisecond))
}
