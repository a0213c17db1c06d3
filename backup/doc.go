// Package backup takes a base backup into a repository: it runs BASE_BACKUP
// (package basebackup), streams each tar archive through a
// tarstream.Splitter into parts compressed and encrypted by repo, checks every
// member against the server's manifest (package manifest), waits until the
// WAL the backup needs is archived, and writes the metadata (catalog.Meta)
// last, which completes the backup.
//
// It sits on basebackup, tarstream, manifest, catalog, repo and wal. Reading
// backups is catalog's job, restoring them restore's.
package backup
