// Package takeover decides what a replica does when it takes over a blob
// fill whose owner died: which bytes it may keep and where its upstream
// download resumes.
//
// A taker may already hold a prefix of the blob (streamed from the owner
// while it lived), and on a shared filesystem the dead owner's staging
// file may hold more (its partial download, found by the storage and
// locked so that no cleanup removes it meanwhile). Neither is verified:
// the rules here only make sure that what is kept is one consistent
// prefix, and that a download whose inherited bytes turn out wrong starts
// again from zero instead of failing.
//
//   - The staged file is adopted only when it is longer than what the
//     taker holds, not longer than the blob (when its size is known), and
//     begins with exactly the bytes the taker holds; then its bytes past
//     the taker's are appended (and hashed by the sink).
//   - The download resumes at the end of what is held (a Range request).
//   - When the complete bytes do not hash to the digest and some of them
//     were inherited, the download restarts from zero once (a new fill
//     generation: readers that had bytes of the old one are cut). A
//     mismatch of bytes that all came from this download's own upstream
//     requests fails the fill as before.
package takeover
