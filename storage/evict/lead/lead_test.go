package lead

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// table is an in-memory lease store shared by the replicas of a test,
// with Redis's semantics (SET NX PX, owner-checked renewal and release, a
// request key), so that time is the synctest bubble's. Fault injection
// (an unavailable store) is what Redis cannot do on demand inside a bubble.
type table struct {
	mu        sync.Mutex
	holder    string
	expires   time.Time
	requested bool
	down      map[string]bool // replicas that cannot reach the store
}

var errDown = errors.New("store unavailable")

func (t *table) reachable(id string) error {
	if t.down[id] {
		return errDown
	}
	return nil
}

type backend struct {
	t  *table
	id string
}

func (b backend) Acquire(_ context.Context, ttl time.Duration) (bool, error) {
	b.t.mu.Lock()
	defer b.t.mu.Unlock()
	if err := b.t.reachable(b.id); err != nil {
		return false, err
	}
	now := time.Now()
	if b.t.holder == "" || !now.Before(b.t.expires) || b.t.holder == b.id {
		b.t.holder, b.t.expires = b.id, now.Add(ttl)
		return true, nil
	}
	return false, nil
}

func (b backend) Release(context.Context) error {
	b.t.mu.Lock()
	defer b.t.mu.Unlock()
	if err := b.t.reachable(b.id); err != nil {
		return err
	}
	if b.t.holder == b.id {
		b.t.holder = ""
	}
	return nil
}

func (b backend) Request(context.Context) error {
	b.t.mu.Lock()
	defer b.t.mu.Unlock()
	if err := b.t.reachable(b.id); err != nil {
		return err
	}
	b.t.requested = true
	return nil
}

func (b backend) TakeRequest(context.Context) (bool, error) {
	b.t.mu.Lock()
	defer b.t.mu.Unlock()
	if err := b.t.reachable(b.id); err != nil {
		return false, err
	}
	r := b.t.requested
	b.t.requested = false
	return r, nil
}

// cluster is three replicas' Leads over one table.
type cluster struct {
	t      *testing.T
	table  *table
	leads  []*Lead
	stops  []func()
	wakes  []int // passes each replica was woken for
	wakeMu sync.Mutex
}

const ttl = 15 * time.Second

func newCluster(t *testing.T, n int) *cluster {
	c := &cluster{t: t, table: &table{down: map[string]bool{}}, wakes: make([]int, n)}
	for i := range n {
		l, err := New(backend{t: c.table, id: fmt.Sprint(i)}, ttl)
		if err != nil {
			t.Fatal(err)
		}
		c.leads = append(c.leads, l)
		c.stops = append(c.stops, nil)
		c.start(i)
	}
	t.Cleanup(func() {
		for i := range c.stops {
			c.stop(i)
		}
	})
	return c
}

// start runs replica i's Lead and counts its wake-ups.
func (c *cluster) start(i int) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = c.leads[i].Run(ctx) })
	wg.Go(func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-c.leads[i].Wake():
				c.wakeMu.Lock()
				c.wakes[i]++
				c.wakeMu.Unlock()
			}
		}
	})
	c.stops[i] = func() { cancel(); wg.Wait() }
	synctest.Wait()
}

func (c *cluster) stop(i int) {
	if c.stops[i] != nil {
		c.stops[i]()
		c.stops[i] = nil
	}
}

func (c *cluster) roles() []Role {
	out := make([]Role, len(c.leads))
	for i, l := range c.leads {
		out[i] = l.Role()
	}
	return out
}

type event func(c *cluster)

func sleep(d time.Duration) event {
	return func(c *cluster) { time.Sleep(d); synctest.Wait() }
}

// stopReplica ends replica i cleanly (it releases the lease).
func stopReplica(i int) event { return func(c *cluster) { c.stop(i); synctest.Wait() } }

// crash stops replica i without a release: its lease must expire.
func crash(i int) event {
	return func(c *cluster) {
		c.table.mu.Lock()
		c.table.down[fmt.Sprint(i)] = true // its release never arrives
		c.table.mu.Unlock()
		c.stop(i)
		c.leads[i] = &Lead{} // gone: role Follower forever
		synctest.Wait()
	}
}

func cut(i int, down bool) event {
	return func(c *cluster) {
		c.table.mu.Lock()
		c.table.down[fmt.Sprint(i)] = down
		c.table.mu.Unlock()
	}
}

func request(i int) event {
	return func(c *cluster) { c.leads[i].Request(context.Background()); synctest.Wait() }
}

// requestLocal asks replica i for a pass and checks whether it must run
// one locally.
func requestLocal(i int, want bool) event {
	return func(c *cluster) {
		c.t.Helper()
		if got := c.leads[i].Request(context.Background()); got != want {
			c.t.Fatalf("replica %d: Request says run locally = %v, want %v", i, got, want)
		}
		synctest.Wait()
	}
}

func resetWakes() event {
	return func(c *cluster) {
		c.wakeMu.Lock()
		clear(c.wakes)
		c.wakeMu.Unlock()
	}
}

// wantRoles checks every replica's role.
func wantRoles(want ...Role) event {
	return func(c *cluster) {
		c.t.Helper()
		got := c.roles()
		if fmt.Sprint(got) != fmt.Sprint(want) {
			c.t.Fatalf("roles %v, want %v", got, want)
		}
	}
}

func wantRole(i int, want Role) event {
	return func(c *cluster) {
		c.t.Helper()
		if got := c.leads[i].Role(); got != want {
			c.t.Fatalf("replica %d: role %v, want %v (all: %v)", i, got, want, c.roles())
		}
	}
}

// wantOneLeader checks that exactly one replica leads.
func wantOneLeader() event {
	return func(c *cluster) {
		c.t.Helper()
		n := 0
		for _, r := range c.roles() {
			if r == Leader {
				n++
			}
		}
		if n != 1 {
			c.t.Fatalf("roles %v: want exactly one leader", c.roles())
		}
	}
}

func wantWakes(want ...int) event {
	return func(c *cluster) {
		c.t.Helper()
		c.wakeMu.Lock()
		defer c.wakeMu.Unlock()
		if fmt.Sprint(c.wakes) != fmt.Sprint(want) {
			c.t.Fatalf("wake-ups %v, want %v", c.wakes, want)
		}
	}
}

// wantWakeTotal checks the wake-ups of all replicas together (which of
// two replicas stepping at the same instant wins is not ordered).
func wantWakeTotal(want int) event {
	return func(c *cluster) {
		c.t.Helper()
		c.wakeMu.Lock()
		defer c.wakeMu.Unlock()
		n := 0
		for _, w := range c.wakes {
			n += w
		}
		if n != want {
			c.t.Fatalf("wake-ups %v, want %d in all", c.wakes, want)
		}
	}
}

func TestLeadSteps(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		events []event
	}{
		{
			name: "the first replica to step leads; the others follow and stay followers",
			events: []event{
				wantRoles(Leader, Follower, Follower), wantWakes(1, 0, 0),
				sleep(time.Hour), wantRoles(Leader, Follower, Follower), wantWakes(1, 0, 0),
			},
		},
		{
			name: "a leader that stops releases: another leads at its next step",
			events: []event{
				stopReplica(0), wantRoles(Follower, Follower, Follower),
				sleep(ttl / 3), wantOneLeader(), wantWakeTotal(2),
			},
		},
		{
			name: "a leader that crashes: another leads once the lease expired, never before",
			events: []event{
				crash(0),
				sleep(ttl - time.Second), wantRoles(Follower, Follower, Follower),
				sleep(ttl / 3), wantOneLeader(), wantWakeTotal(2),
			},
		},
		{
			name: "a follower's request wakes the leader within one interval, once",
			events: []event{
				resetWakes(), request(2), wantWakes(0, 0, 0),
				sleep(ttl / 3), wantWakes(1, 0, 0),
				sleep(ttl), wantWakes(1, 0, 0),
			},
		},
		{
			name:   "a request on the leader wakes it at once",
			events: []event{resetWakes(), request(0), wantWakes(1, 0, 0)},
		},
		{
			name: "a follower cut from the store skips passes for one TTL (a blip), then goes local, and follows again when it is back",
			events: []event{
				cut(1, true), sleep(ttl / 3), wantRoles(Leader, Follower, Follower),
				sleep(ttl/3 + ttl/3), wantRoles(Leader, Follower, Follower),
				sleep(ttl / 3), wantRoles(Leader, Local, Follower),
				resetWakes(), request(1), wantWakes(0, 1, 0), // local: it runs its own pass
				cut(1, false), sleep(ttl / 3), wantRoles(Leader, Follower, Follower),
			},
		},
		{
			name: "a blip shorter than the TTL never makes a replica evict on its own",
			events: []event{
				cut(1, true), cut(2, true), sleep(ttl / 3), wantRoles(Leader, Follower, Follower),
				cut(1, false), cut(2, false), sleep(ttl / 3), wantRoles(Leader, Follower, Follower),
				sleep(ttl), wantRoles(Leader, Follower, Follower),
			},
		},
		{
			name: "a leader cut from the store stops leading at once; another leads only after the lease expired; it goes local after one TTL",
			events: []event{
				cut(0, true), sleep(ttl / 3), wantRoles(Follower, Follower, Follower),
				sleep(ttl / 3), wantRoles(Follower, Follower, Follower),
				sleep(ttl / 3), wantRole(0, Follower), wantOneLeader(),
				sleep(ttl / 3), wantRole(0, Local), wantOneLeader(), // one TTL after its first failed step
				cut(0, false), sleep(ttl / 3), wantRole(0, Follower), wantOneLeader(),
			},
		},
		{
			name: "a request while the follower cannot reach the store asks it to run a local pass at once",
			events: []event{
				cut(2, true), resetWakes(), requestLocal(2, true), wantRoles(Leader, Follower, Follower), wantWakes(0, 0, 0),
				requestLocal(1, false), sleep(ttl / 3), wantWakes(1, 0, 0),
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			synctest.Test(t, func(t *testing.T) {
				c := newCluster(t, 3)
				for _, e := range tt.events {
					e(c)
				}
			})
		})
	}
}

// stuck is a backend whose Acquire takes longer than the lease lives (a
// Redis answering too late): the lease's validity is counted from before
// the call, so the leader does not believe it leads past it.
type stuck struct {
	backend
	delay time.Duration
}

func (s stuck) Acquire(ctx context.Context, ttl time.Duration) (bool, error) {
	time.Sleep(s.delay)
	return s.backend.Acquire(ctx, ttl)
}

func TestLeadValidityCountsFromBeforeTheCall(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		tb := &table{down: map[string]bool{}}
		l, err := New(stuck{backend{t: tb, id: "a"}, ttl + time.Second}, ttl)
		if err != nil {
			t.Fatal(err)
		}
		l.Step(context.Background())
		if r := l.Role(); r != Follower {
			t.Fatalf("role %v after an Acquire answered past the TTL; want follower", r)
		}
	})
}

func TestNewRejectsBadSettings(t *testing.T) {
	t.Parallel()
	b := backend{t: &table{}, id: "a"}
	for _, tc := range []struct {
		name string
		b    Backend
		ttl  time.Duration
		opts []Option
	}{
		{"nil backend", nil, ttl, nil},
		{"short TTL", b, 500 * time.Millisecond, nil},
		{"interval past the TTL", b, ttl, []Option{WithInterval(ttl)}},
		{"zero interval", b, ttl, []Option{WithInterval(0)}},
	} {
		if _, err := New(tc.b, tc.ttl, tc.opts...); err == nil {
			t.Errorf("%s: New succeeded", tc.name)
		}
	}
}
