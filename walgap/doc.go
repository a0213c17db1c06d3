// Package walgap keeps the records of WAL segments that wal-push dropped
// under archive-queue-max: a segment reported archived without being
// stored, so that the primary keeps running when the repository has been
// unreachable for too long.
//
// A drop is first recorded in a local directory (one small file per
// segment, fsynced before wal-push answers), because the repository cannot
// be written while it is unreachable. Once a later push reaches the
// repository, the local records are merged into ranges of consecutive
// segments and written as plaintext metadata objects,
// gaps/<timeline>/<first>-<last>.json (create-only, signed like other
// metadata when a signing key is set); then the local records go.
// walinventory reads the repository records to name the cause of a gap;
// check reads both.
package walgap
