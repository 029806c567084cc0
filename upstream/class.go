package upstream

import (
	"context"
	"sync"
	"sync/atomic"
)

// Class is the kind of traffic a request carries, for the link budget:
// client traffic goes first, prefetch yields to it (config.Link).
type Class uint8

const (
	// ClassClient is traffic a client is waiting for (the default).
	ClassClient Class = iota
	// ClassPrefetch is traffic nobody waits for yet: a prefetch run.
	ClassPrefetch
)

// String is "client" or "prefetch" (the metrics label).
func (c Class) String() string {
	if c == ClassPrefetch {
		return "prefetch"
	}
	return "client"
}

type classKey struct{}

// WithClass returns a context whose upstream requests carry class c. A
// request without a class is client traffic.
func WithClass(ctx context.Context, c Class) context.Context {
	return WithClassFunc(ctx, func() Class { return c })
}

// WithClassFunc returns a context whose upstream requests take their class
// from fn, asked again before every chunk of a response body: a prefetch
// fill that a client joins becomes client traffic from its next chunk on.
// fn must be fast and safe for concurrent use.
func WithClassFunc(ctx context.Context, fn func() Class) context.Context {
	if fn == nil {
		return ctx
	}
	return context.WithValue(ctx, classKey{}, fn)
}

// classFunc returns the class source of ctx (ClassClient when none).
func classFunc(ctx context.Context) func() Class {
	if fn, ok := ctx.Value(classKey{}).(func() Class); ok {
		return fn
	}
	return func() Class { return ClassClient }
}

// ClassOf returns the class of ctx's requests now.
func ClassOf(ctx context.Context) Class { return classFunc(ctx)() }

// Waiters tracks who waits on one shared download, such as a blob fill
// that several requests read: its Class is ClassClient while at least one
// client-class waiter is joined, and ClassPrefetch otherwise (a prefetch
// run, or a download that every client has left). Give the download's
// context WithClassFunc(ctx, w.Class), and Join every reader with its own
// request context. The zero value is ready to use.
type Waiters struct {
	clients atomic.Int64
}

// Join adds a waiter of ctx's class; leave removes it (call it once).
func (w *Waiters) Join(ctx context.Context) (leave func()) {
	if ClassOf(ctx) != ClassClient {
		return func() {}
	}
	w.clients.Add(1)
	var once sync.Once
	return func() { once.Do(func() { w.clients.Add(-1) }) }
}

// Class is the download's class now.
func (w *Waiters) Class() Class {
	if w.clients.Load() > 0 {
		return ClassClient
	}
	return ClassPrefetch
}
