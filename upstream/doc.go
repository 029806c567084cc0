// Package upstream is Stowage's client for one logical upstream registry
// (docker.io, ghcr.io, a private Harbor, ...).
//
// New builds a *Client that implements Registry from a config.Upstream: it
// talks to the configured endpoints in order, through the upstream's own
// HTTP(S) forward proxy and TLS settings, authenticates with
// go-containerregistry's challenge/token transport (one cached transport per
// repository pull scope), retries temporary failures of metadata requests
// with NewBackOff and Retry-After (blob GETs are sent once: the caller's
// fill retries and resumes them with Range requests at its offset), tells
// the forward proxy's answers (ErrProxy) from the registry's, refuses
// redirects and token realms on internal addresses unless the upstream is
// internal (ErrForbiddenAddress), bounds error and manifest bodies, and
// redacts credentials and signed URLs from every error and log line.
//
// The client is built from stacked http.RoundTrippers, innermost first:
//
//	http.Transport (proxy, TLS, dial/handshake/header timeouts; a refused
//	                CONNECT becomes a *StatusError)
//	-> proxyAnswers         (407 and non-registry 403: ErrProxy)
//	-> userAgent            (User-Agent header)
//	-> realmAliases         (internal token realms, for internal upstreams)
//	-> go-containerregistry's transport (challenge ping, bearer/basic auth) per scope
//	-> retry                (NewBackOff, Retry-After, the call's attempt budget)
//
// Bodies handed to callers are wrapped in a stall reader that aborts the
// request when no byte arrives for Timeouts.Stall, and in the budget
// reader: a Budget (NewBudget, shared by every client of the process with
// WithBudget) paces body reads with golang.org/x/time/rate token buckets
// for the upstream's config.Limits.Bandwidth and for the link (all
// upstreams behind one forward proxy, config.Link), and
// config.Limits.Connections caps the requests in progress. Each request's
// context carries its traffic class (WithClass, WithClassFunc; Waiters for
// a download several requests share): while client traffic is active on a
// capped budget, prefetch traffic gets at most config.Link.PrefetchShare
// of it. With a BudgetStore (proxy/cluster's Redis store) the bandwidth
// caps hold for all replicas.
package upstream
