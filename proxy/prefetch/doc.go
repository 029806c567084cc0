// Package prefetch loads images into the cache ahead of use.
//
// An [Engine] turns image lists (the images-list.txt form or a
// skopeo-sync YAML, parsed by config/imagelist) and inline references into
// the same fills a client pull would start, through the proxy's exported
// API: tags are resolved with the cache policy (EnsureManifest), indexes
// are stored byte-identical and only the children matching a platform
// filter are fetched, and every config and layer blob is ensured once per
// run (EnsureBlob) however many images share it. A blob that a client is
// pulling at the same moment is downloaded once: prefetch joins the
// client's fill.
//
// The result is a [Report] per image (resolved digest, platforms, bytes
// from the upstream and from the cache, duration, error). Images named by
// a list are recorded as pins in the store (storage.Pin), so that a
// size-capped eviction can keep them.
//
// [Jobs] runs engine runs in the background for the admin API
// ([NewAdminHandler]) and the schedule. With a [SharedList] (Jobs.Share:
// the cluster's job list in Redis) jobs belong to the cluster: any
// replica lists, follows and cancels them, and each runs on the one
// replica that holds its lease, which another replica takes over when the
// runner dies (proxy/internal/jobclaim).
package prefetch
