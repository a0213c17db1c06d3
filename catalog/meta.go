package catalog

import (
	"fmt"
	"time"

	"github.com/pgark/pgark/repo"
)

// MetaFormat is the version of backup.json this pgark writes.
const MetaFormat = 1

// Key layout.
const (
	Prefix       = "backups/"
	MetaName     = "backup.json"
	ManifestName = "backup_manifest.pgark"
)

// MetaKey is the key of a backup's metadata object (its completion marker).
func MetaKey(id string) string { return Prefix + id + "/" + MetaName }

// ReferencesKey is the key of a file-level incremental backup's list of
// the files it takes from its parent.
func ReferencesKey(id string) string { return Prefix + id + "/references.pgark" }

// ManifestKey is the key of a backup's manifest object.
func ManifestKey(id string) string { return Prefix + id + "/" + ManifestName }

// PartKey is the key of part n of archive (e.g. "base.tar", "16385.tar").
func PartKey(id, archive string, n int) string {
	return fmt.Sprintf("%s%s/%s.%03d.pgark", Prefix, id, archive, n)
}

// NewID returns a backup ID for a start time: sortable, UTC, second precision.
func NewID(t time.Time) string { return repo.NewRunID(t) }

// ValidID reports whether s is a well-formed backup ID.
func ValidID(s string) bool { return repo.ValidRunID(s) }

// Meta is a backup's metadata object.
type Meta struct {
	Format   int    `json:"format"`
	ID       string `json:"id"`
	Label    string `json:"label"`
	Pgark    string `json:"pgark_version"`
	FromHost string `json:"from_host,omitempty"` // the server's host:port as pgark reached it

	StartTime time.Time `json:"start_time"` // when the server started the backup (pgark's clock at the start LSN)
	EndTime   time.Time `json:"end_time"`   // when the server reported the end LSN
	// StopTime is the server's own record of the backup end, used to choose
	// a backup for a recovery target: the STOP TIME of the .backup history
	// file (primary), else EndTime.
	StopTime      time.Time `json:"stop_time"`
	StartLSN      string    `json:"start_lsn"` // X/X
	StartTimeline uint32    `json:"start_timeline"`
	EndLSN        string    `json:"end_lsn"`
	EndTimeline   uint32    `json:"end_timeline"`
	FromStandby   bool      `json:"from_standby"`

	SystemID        string `json:"system_identifier"` // decimal, as PostgreSQL prints it
	PGVersionNum    int    `json:"pg_version_num"`    // server_version_num, e.g. 150018
	PGMajor         int    `json:"pg_major"`
	WalSegmentBytes uint32 `json:"wal_segment_size"`
	DataChecksums   bool   `json:"data_checksums"`

	// Type is "full", "incr" or "diff" ("" in metadata written before
	// incremental backups existed: full). Parent is the backup an
	// incremental one was taken against: its files are this backup's
	// starting point.
	Type   string `json:"type,omitempty"`
	Parent string `json:"parent,omitempty"`
	// Method is how an incremental backup was taken: "block" (PostgreSQL
	// 17+ INCREMENTAL files; "" in older metadata) or "file" (unchanged
	// files left out, listed in References).
	Method     string     `json:"method,omitempty"`
	References *ObjectRef `json:"references,omitempty"`
	// Fallback says why a backup asked for as incremental or differential
	// is a full one (no usable parent, or the server refused).
	Fallback string `json:"fallback,omitempty"`
	// BlockSize and SegmentBlocks are the server's block_size and
	// segment_size in blocks (0 when not recorded: 8192 and 131072), which
	// incremental files are read with.
	BlockSize     int    `json:"block_size,omitempty"`
	SegmentBlocks uint32 `json:"segment_blocks,omitempty"`

	Tablespaces []Tablespace `json:"tablespaces"` // not including the data directory
	Archives    []Archive    `json:"archives"`    // base.tar last, as the server sent it

	Manifest ObjectRef `json:"manifest"` // the server's backup_manifest (ManifestKey)
	// ManifestChecksums is the algorithm the server used per file.
	ManifestChecksums string `json:"manifest_checksums"`

	RawBytes    int64 `json:"raw_bytes"`    // sum of the tar streams' sizes
	StoredBytes int64 `json:"stored_bytes"` // sum of the stored objects' sizes
	Files       int   `json:"files"`        // tar members checked against the manifest

	// WALSegments lists the segments from start to end that were confirmed in
	// the repository before this object was written (first and last names).
	WALFirst string `json:"wal_first"`
	WALLast  string `json:"wal_last"`

	// Recipients are the fingerprints of the age recipients the backup's
	// objects are encrypted to: one of their identities reads it.
	Recipients []string `json:"recipients,omitempty"`
}

// Incremental methods.
const (
	MethodBlock = "block"
	MethodFile  = "file"
)

// Backup types.
const (
	TypeFull = "full"
	TypeIncr = "incr"
	TypeDiff = "diff"
)

// Kind is the backup's type, "full" for metadata that predates types.
func (m *Meta) Kind() string {
	if m.Type == "" {
		return TypeFull
	}
	return m.Type
}

// Tablespace is one tablespace of the backed-up cluster.
type Tablespace struct {
	OID      uint32 `json:"oid"`
	Location string `json:"location"`
}

// Archive is one tar stream of the backup: "base.tar" for the data directory,
// "<oid>.tar" for a tablespace.
type Archive struct {
	Name  string      `json:"name"`
	OID   uint32      `json:"oid,omitempty"` // 0 for base.tar
	Parts []ObjectRef `json:"parts"`
	Bytes int64       `json:"bytes"` // size of the tar stream
}

// ObjectRef names a stored object and what it must decode to.
type ObjectRef struct {
	Key         string `json:"key"`
	Bytes       int64  `json:"bytes"`        // plaintext size
	SHA256      string `json:"sha256"`       // plaintext SHA-256, hex
	StoredBytes int64  `json:"stored_bytes"` // size in the store
	Members     int    `json:"members,omitempty"`
	FirstMember string `json:"first_member,omitempty"`
}
