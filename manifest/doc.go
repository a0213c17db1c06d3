// Package manifest parses PostgreSQL's backup_manifest (versions 1 and 2),
// verifies its Manifest-Checksum, and checks the members of a backup's tar
// streams (as tarstream reports them) against it: every file present, of the
// listed size and checksum, and nothing unlisted.
//
// It sits on tarstream (members and checksum algorithms) and wal (LSNs).
package manifest
