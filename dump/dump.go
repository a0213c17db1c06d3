// Package dump takes logical dumps (pg_dump -Fc per database, pg_dumpall
// --globals-only for roles and tablespaces) into the repository, streamed
// through zstd and age with no local staging, and restores them with
// pg_restore: whole databases, selected tables or schemas (with what
// depends on them), or the roles, without resetting the roles that exist.
//
// Repository layout of one dump run (ID like 20261124T215700Z, sortable by
// its start time, like backup IDs):
//
//	dumps/<ID>/globals.sql.pgark     pg_dumpall --globals-only output
//	dumps/<ID>/<db-escaped>.dump.pgark  pg_dump -Fc -Z0 of one database
//	dumps/<ID>/dump.json             the metadata: written LAST; a run without it is not complete
//	dumps/<ID>/failed.json           written instead when the run failed (its objects are deleted)
//
// Database names may hold any character: EscapeName keeps ASCII letters,
// digits, '_' and '-' and writes every other byte as %XX. The keys are
// recorded in dump.json, which readers use (they never rebuild a key).
// Every object records its plaintext SHA-256 and size in dump.json, and
// readers check them as well as the age authentication.
package dump

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/pgark/pgark/repo"
	"github.com/pgark/pgark/storage"
)

// MetaFormat is the version of dump.json this pgark writes.
const MetaFormat = 1

// Key layout.
const (
	Prefix      = "dumps/"
	MetaName    = "dump.json"
	FailedName  = "failed.json"
	GlobalsName = "globals.sql.pgark"
	dbSuffix    = ".dump.pgark"
)

// MetaKey is the key of a run's metadata object (its completion marker).
func MetaKey(id string) string { return Prefix + id + "/" + MetaName }

// FailedKey is the key of a failed run's marker.
func FailedKey(id string) string { return Prefix + id + "/" + FailedName }

// GlobalsKey is the key of a run's globals object.
func GlobalsKey(id string) string { return Prefix + id + "/" + GlobalsName }

// DatabaseKey is the key of one database's archive in a run.
func DatabaseKey(id, db string) string { return Prefix + id + "/" + EscapeName(db) + dbSuffix }

// EscapeName makes a database name safe in an object key and a file name:
// ASCII letters, digits, '_' and '-' stay, every other byte becomes %XX
// (upper-case hex), so '/', '.', '%', spaces and non-ASCII never reach a key.
func EscapeName(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '_', c == '-':
			b.WriteByte(c)
		default:
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

// UnescapeName reverses EscapeName.
func UnescapeName(s string) (string, error) {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '%' {
			b.WriteByte(s[i])
			continue
		}
		if i+2 >= len(s) {
			return "", fmt.Errorf("bad escape in %q", s)
		}
		var c byte
		if _, err := fmt.Sscanf(s[i+1:i+3], "%02X", &c); err != nil {
			return "", fmt.Errorf("bad escape in %q", s)
		}
		b.WriteByte(c)
		i += 2
	}
	return b.String(), nil
}

// NewID returns a run ID for a start time: sortable, UTC, second precision.
func NewID(t time.Time) string { return repo.NewRunID(t) }

// ValidID reports whether s is a well-formed run ID.
func ValidID(s string) bool { return repo.ValidRunID(s) }

// Meta is a dump run's metadata object (plaintext: no secrets; listing and
// retention read it without the identity).
type Meta struct {
	Format           int        `json:"format"`
	ID               string     `json:"id"`
	Pgark            string     `json:"pgark_version"`
	FromHost         string     `json:"from_host,omitempty"`
	StartTime        time.Time  `json:"start_time"`
	EndTime          time.Time  `json:"end_time"`
	ServerVersion    string     `json:"server_version"`     // e.g. "17.2"
	ServerVersionNum int        `json:"server_version_num"` // e.g. 170002
	PgDumpVersion    string     `json:"pg_dump_version"`    // e.g. "17.2"
	PgDumpMajor      int        `json:"pg_dump_major"`
	NoRolePasswords  bool       `json:"no_role_passwords"` // globals dumped without passwords
	Globals          Object     `json:"globals"`
	Databases        []Database `json:"databases"`
	RawBytes         int64      `json:"raw_bytes"`
	StoredBytes      int64      `json:"stored_bytes"`
}

// Object names a stored object and what it must decode to.
type Object struct {
	Key         string `json:"key"`
	Bytes       int64  `json:"bytes"`  // plaintext size
	SHA256      string `json:"sha256"` // plaintext SHA-256, hex
	StoredBytes int64  `json:"stored_bytes"`
}

// Database is one database of a run.
type Database struct {
	Name           string    `json:"name"`
	Encoding       string    `json:"encoding"`
	Collate        string    `json:"collate"`
	Ctype          string    `json:"ctype"`
	LocaleProvider string    `json:"locale_provider"`  // libc, icu or builtin
	Locale         string    `json:"locale,omitempty"` // the ICU or builtin locale
	StartTime      time.Time `json:"start_time"`
	EndTime        time.Time `json:"end_time"`
	Object
}

// Failed is a failed run's marker.
type Failed struct {
	ID    string    `json:"id"`
	Time  time.Time `json:"time"`
	Error string    `json:"error"`
}

// ErrNoDump means no complete dump run matches.
var ErrNoDump = errors.New("no such complete dump")

// errNoDumpHint is ErrNoDump as ReadMeta reports a missing dump.json.
var errNoDumpHint = fmt.Errorf("%w (failed or incomplete runs are never used; see pgark list --dumps)", ErrNoDump)

// Check checks metadata read under run id: restore relies on what it
// accepts (the run's own id, object keys inside the run, hex hashes).
func (m *Meta) Check(id string) error {
	if m.ID != id {
		return fmt.Errorf("it names run %q", m.ID)
	}
	if m.Format != MetaFormat {
		return fmt.Errorf("metadata format %d, this pgark reads %d", m.Format, MetaFormat)
	}
	objs := []Object{m.Globals}
	for _, d := range m.Databases {
		if d.Name == "" {
			return errors.New("a database without a name")
		}
		objs = append(objs, d.Object)
	}
	for _, o := range objs {
		if !strings.HasPrefix(o.Key, Prefix+m.ID+"/") || len(o.SHA256) != 64 || o.Bytes < 0 {
			return fmt.Errorf("bad object %q", o.Key)
		}
	}
	return nil
}

// Database returns the named database of the run, or nil.
func (m *Meta) Database(name string) *Database {
	for i := range m.Databases {
		if m.Databases[i].Name == name {
			return &m.Databases[i]
		}
	}
	return nil
}

// Listing is what the repository holds: complete runs oldest first (by
// recorded start time), failed runs, and the IDs of runs that have neither
// marker (in progress, or interrupted: never usable).
type Listing struct {
	Dumps      []*Meta
	Failed     []Failed
	Incomplete []string
}

// List reads every run's markers. It uses LIST (listing, not a hot path).
func List(ctx context.Context, s storage.Store) (*Listing, error) {
	type state struct{ meta, failed bool }
	ids := map[string]*state{}
	var order []string
	err := s.List(ctx, Prefix, func(oi storage.ObjectInfo) error {
		id, rest, ok := strings.Cut(strings.TrimPrefix(oi.Key, Prefix), "/")
		if !ok || !ValidID(id) {
			return nil
		}
		st := ids[id]
		if st == nil {
			st = &state{}
			ids[id] = st
			order = append(order, id)
		}
		switch rest {
		case MetaName:
			st.meta = true
		case FailedName:
			st.failed = true
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list dumps: %w", err)
	}
	l := &Listing{}
	for _, id := range order {
		st := ids[id]
		switch {
		case st.meta:
			m, err := ReadMeta(ctx, s, id)
			if err != nil {
				return nil, err
			}
			l.Dumps = append(l.Dumps, m)
		case st.failed:
			var f Failed
			if err := repo.ReadJSON(ctx, s, FailedKey(id), &f); err != nil {
				f = Failed{Error: "(failed.json unreadable: " + err.Error() + ")"}
			}
			f.ID = id
			l.Failed = append(l.Failed, f)
		default:
			l.Incomplete = append(l.Incomplete, id)
		}
	}
	sort.SliceStable(l.Dumps, func(i, j int) bool {
		if !l.Dumps[i].StartTime.Equal(l.Dumps[j].StartTime) {
			return l.Dumps[i].StartTime.Before(l.Dumps[j].StartTime)
		}
		return l.Dumps[i].ID < l.Dumps[j].ID
	})
	return l, nil
}

// ReadMeta reads and checks one run's metadata.
func ReadMeta(ctx context.Context, s storage.Store, id string) (*Meta, error) {
	if !ValidID(id) {
		return nil, fmt.Errorf("%q is not a dump id (like 20261124T154500Z) or latest", id)
	}
	var m Meta
	if err := repo.ReadMeta(ctx, s, "dump", id, MetaKey(id), &m, errNoDumpHint); err != nil {
		return nil, err
	}
	return &m, nil
}

// Find returns the run named id, or for "latest" the newest complete run.
// Failed and incomplete runs are never returned.
func Find(ctx context.Context, s storage.Store, id string) (*Meta, error) {
	if id != "latest" {
		return ReadMeta(ctx, s, id)
	}
	l, err := List(ctx, s)
	if err != nil {
		return nil, err
	}
	if len(l.Dumps) == 0 {
		return nil, fmt.Errorf("%w in %s (failed: %d, incomplete: %d)", ErrNoDump, s, len(l.Failed), len(l.Incomplete))
	}
	return l.Dumps[len(l.Dumps)-1], nil
}
