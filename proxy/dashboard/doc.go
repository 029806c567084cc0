// Package dashboard serves Stowage's web dashboard under /ui/ and the
// read-only JSON API it is built on under /api/v1/ (documented in
// docs/api.md): an overview of usage, traffic and upstreams, the fills in
// flight, the cached contents and the prefetch jobs.
//
// The dashboard reads only the store and in-memory state (the fill
// registry, the upstreams' down windows, the Prometheus registry); it never
// contacts an upstream. Writes (starting a prefetch, cancelling a fill) are
// not served here: they are passed to the admin handler, which checks the
// admin token itself.
//
// The page is plain HTML, CSS and JavaScript embedded with the embed
// package: there is no build step.
package dashboard
