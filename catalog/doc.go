// Package catalog is the backup catalog of a repository: the metadata object
// (backup.json) of every base backup, the keys of a backup's objects,
// listing, reading and checking the metadata, choosing a backup for a
// recovery target, and verifying a stored backup against its metadata and
// manifest.
//
// Repository layout of one backup (ID like 20261124T215700Z):
//
//	backups/<ID>/base.tar.000.pgark      tar members of the data directory, split at
//	backups/<ID>/base.tar.001.pgark      member boundaries into parts of at most a part limit
//	backups/<ID>/16385.tar.000.pgark     one tar stream per tablespace (by OID)
//	backups/<ID>/backup_manifest.pgark   the server's backup_manifest, byte-exact
//	backups/<ID>/backup.json             the metadata: written LAST; a backup without it is not complete
//
// Every .pgark object uses the repository object format (repo.NewObjectWriter:
// compression and encryption recorded in the object) and carries the
// plaintext SHA-256 and size in its storage metadata. Parts are raw byte
// ranges of the server's tar stream cut at member boundaries
// (tarstream.Splitter): concatenating a stream's parts in order gives the
// server's tar stream exactly (with the end-of-archive trailer in the last
// part), and each part on its own is a sequence of complete tar members (so
// parts can be extracted in parallel).
//
// backup.json is plaintext JSON (no secrets; list and retention read it
// without the identity). The manifest, which names every file, is an
// encrypted object like the data.
//
// It sits on repo and storage (reading), wal (LSNs, timelines), and, for
// Verify, on tarstream and manifest. Package backup writes what it reads;
// restore, retention, health and walinventory read it.
package catalog
