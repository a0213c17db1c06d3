// Package replicate copies a repository's objects into another repository,
// as they are stored: still compressed and encrypted, with their metadata
// (hashes, recipients, signatures). It is what `pgark copy` runs.
//
// Replication is incremental and safe to interrupt:
//
//   - An object the destination already holds with the same stored size is
//     skipped; one it holds with another size is reported as a conflict and
//     left alone (objects are immutable: nothing is ever overwritten).
//   - WAL and timeline history files are copied first, then each complete
//     backup and dump run, its data objects before its metadata object
//     (backup.json, dump.json), so that a backup copied in part is never
//     listed, never used, exactly as a backup being taken. Backups and runs
//     without their metadata object (in progress, failed) are not copied.
//   - Every copied object is verified: the SHA-256 of the stored bytes read
//     from the source is compared with that of the bytes read back from the
//     destination.
//   - The repositories' own objects (pgark.json, the lock) are not copied;
//     cluster.json is, when the destination is not bound yet.
package replicate
