package upstream

import (
	"context"
	"testing"
)

func TestClassOfAndWaiters(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	if ClassOf(ctx) != ClassClient {
		t.Error("a context without a class is not client traffic")
	}
	pctx := WithClass(ctx, ClassPrefetch)
	if ClassOf(pctx) != ClassPrefetch || ClassOf(WithClassFunc(pctx, nil)) != ClassPrefetch {
		t.Error("WithClass(prefetch) lost")
	}

	// A prefetch fill: prefetch until a client joins, client while one
	// waits, prefetch again when every client left.
	var w Waiters
	fill := WithClassFunc(context.Background(), w.Class)
	leaveP := w.Join(pctx)
	if ClassOf(fill) != ClassPrefetch {
		t.Errorf("fill with a prefetch waiter is %v", ClassOf(fill))
	}
	leaveA, leaveB := w.Join(ctx), w.Join(ctx)
	if ClassOf(fill) != ClassClient {
		t.Errorf("fill with client waiters is %v", ClassOf(fill))
	}
	leaveA()
	leaveA() // once only
	if ClassOf(fill) != ClassClient {
		t.Errorf("fill with one client left is %v", ClassOf(fill))
	}
	leaveB()
	leaveP()
	if ClassOf(fill) != ClassPrefetch {
		t.Errorf("fill nobody waits for is %v", ClassOf(fill))
	}
}
