// Package upstream is Stowage's client for one logical upstream registry
// (docker.io, ghcr.io, a private Harbor, ...).
//
// New builds a *Client that implements Registry from a config.Upstream: it
// talks to the configured endpoints in order, through the upstream's own
// HTTP(S) forward proxy and TLS settings, authenticates with
// go-containerregistry's challenge/token transport (one cached transport per
// repository pull scope), retries temporary failures with backoff and
// Retry-After, resumes blobs with Range requests at the caller's offset,
// refuses redirects to internal addresses, bounds error and manifest bodies,
// and redacts credentials and signed URLs from every error and log line.
//
// The client is built from stacked http.RoundTrippers, innermost first:
//
//	http.Transport (proxy, TLS, dial/handshake/header timeouts)
//	-> userAgent            (User-Agent header)
//	-> transport.NewWithContext (challenge ping, bearer/basic auth) per scope
//	-> retry                (backoff on temporary failures, Retry-After)
//
// Bodies handed to callers are wrapped in a stall reader that aborts the
// request when no byte arrives for Timeouts.Stall.
package upstream
