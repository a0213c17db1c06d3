// Package basebackup is pgark's client of the BASE_BACKUP replication command
// (PostgreSQL 13-18), written on pgconn and pgproto3: it builds the command,
// demultiplexes the server's COPY stream into one tar stream per tablespace
// plus the backup_manifest, and hands each to a Handler as an io.Reader that
// pulls messages as it is read (nothing is buffered beyond one message). It
// also runs IDENTIFY_SYSTEM and reads server_version_num.
//
// It sits on pgconn and on tarstream (it follows each PG15+ archive's tar
// structure to find its end-of-archive marker); it knows nothing of
// repositories: package backup drives it.
package basebackup
