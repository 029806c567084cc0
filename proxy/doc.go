// Package proxy is Stowage's pull-through cache: the OCI / Docker Registry
// V2 read API (GET/HEAD of manifests and blobs, tags/list, _catalog,
// referrers) served from a storage.Store, with misses filled from upstream
// registries.
//
// A request is routed (gorilla/mux, names and references constrained by the
// reference grammar), resolved to an upstream (containerd's ns query
// parameter, else a registry host leading the path, else the default
// upstream) and answered by the cache policy: manifests by digest are
// immutable; manifests by tag carry a fetched-at time and are revalidated
// with an upstream HEAD after the tag TTL, served stale when the upstream
// fails; a blob miss starts exactly one fill per digest that every client of
// that digest streams from while it downloads, detached from any client,
// verified before an atomic commit. Write verbs answer 405 UNSUPPORTED.
package proxy
