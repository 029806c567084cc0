// Package bundle moves a subset of a cache across an air gap as a tar
// archive in the distribution registry's layout.
//
// [Export] writes exactly the images it is given: every blob (manifests,
// configs, layers) once under docker/registry/v2/blobs/..., then the
// repositories' revision, tag and layer links. Blobs stream from the store
// and are verified on the way; nothing is buffered in memory. The archive
// extracted anywhere is a root a stock registry serves.
//
// [Import] reads such an archive as a stream and writes it into a Store
// through the Store's own API, never by joining archive paths onto the
// file system: every blob is hashed while it is copied into a staging file
// and committed only when the digest matches; links are written after the
// blobs they name exist. Entries that are not part of the registry layout,
// that would escape the root ("..", absolute paths), and links, devices
// and other special files are refused. Importing the same archive again
// changes nothing.
package bundle
