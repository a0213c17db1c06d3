package health

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgark/pgark/storage"
	"github.com/pgark/pgark/wal"
)

// Archiver is the server's pg_stat_archiver row. Counts and "last" fields
// cover the time since the statistics were last reset.
type Archiver struct {
	ArchivedCount    int64      `json:"archived_count"`
	LastArchivedWAL  string     `json:"last_archived_wal"`
	LastArchivedTime *time.Time `json:"last_archived_time"`
	FailedCount      int64      `json:"failed_count"`
	LastFailedWAL    string     `json:"last_failed_wal"`
	LastFailedTime   *time.Time `json:"last_failed_time"`
	StatsReset       *time.Time `json:"stats_reset"`
}

// Failing reports whether the archiver's newest attempt failed: the last
// failure is later than the last success, or it failed and never succeeded.
func (a *Archiver) Failing() bool {
	if a == nil || a.LastFailedTime == nil {
		return false
	}
	if a.LastArchivedTime == nil {
		return a.FailedCount > 0 || a.LastFailedWAL != ""
	}
	return a.LastFailedTime.After(*a.LastArchivedTime)
}

// Server is what Gather reads from PostgreSQL. Empty strings and nil
// pointers are values that could not be read; Notes says why.
type Server struct {
	VersionNum     int    `json:"version_num"`
	InRecovery     bool   `json:"in_recovery"`
	SystemID       string `json:"system_identifier,omitempty"`
	ArchiveMode    string `json:"archive_mode"`
	ArchiveCommand string `json:"-"`
	// ArchiveCommandShown is archive_command with the values of secret-looking
	// assignments (…KEY=, …SECRET=, …PASSWORD=, …TOKEN=) masked.
	ArchiveCommandShown string `json:"archive_command"`
	// CommandKnown is false when archive_command could not be read.
	CommandKnown   bool   `json:"-"`
	ArchiveLibrary string `json:"archive_library,omitempty"`
	DataDirectory  string `json:"data_directory,omitempty"`
	WALSegmentSize uint32 `json:"wal_segment_size"`
	// CurrentWAL is the segment the next WAL goes to: the one being
	// written (primary) or replayed (standby); CurrentLSN is the position.
	CurrentWAL string    `json:"current_wal,omitempty"`
	CurrentLSN string    `json:"current_lsn,omitempty"`
	StartTime  time.Time `json:"postmaster_start_time"`
	Archiver   *Archiver `json:"-"`
	// ReadyFiles is the number of .ready files in pg_wal/archive_status
	// (files waiting for archive_command), nil when unknown; ReadySource
	// says how it was counted.
	ReadyFiles  *int     `json:"-"`
	ReadySource string   `json:"ready_files_source,omitempty"`
	Notes       []string `json:"notes"`
}

// Archives reports whether this server runs archive_command: a primary
// with archive_mode on or always, a standby only with always.
func (s *Server) Archives() bool {
	if s.InRecovery {
		return s.ArchiveMode == "always"
	}
	return s.ArchiveMode == "on" || s.ArchiveMode == "always"
}

// Timeline is the timeline of CurrentWAL, 0 when unknown.
func (s *Server) Timeline() uint32 {
	n, err := wal.ParseName(s.CurrentWAL)
	if err != nil {
		return 0
	}
	return n.Timeline
}

func (s *Server) note(format string, a ...any) {
	s.Notes = append(s.Notes, storage.OneLine(fmt.Sprintf(format, a...)))
}

// query runs one statement with the simple protocol and returns its rows
// (text values, nil for NULL). A failed statement leaves the session usable
// for the next one (no transaction is open).
func query(ctx context.Context, conn *pgconn.PgConn, sql string) ([][][]byte, error) {
	rs, err := conn.Exec(ctx, sql).ReadAll()
	if err != nil {
		return nil, err
	}
	if len(rs) != 1 {
		return nil, fmt.Errorf("%d results for one statement", len(rs))
	}
	return rs[0].Rows, nil
}

func queryRow(ctx context.Context, conn *pgconn.PgConn, sql string) ([][]byte, error) {
	rows, err := query(ctx, conn, sql)
	if err != nil {
		return nil, err
	}
	if len(rows) != 1 {
		return nil, fmt.Errorf("%d rows, expected one", len(rows))
	}
	return rows[0], nil
}

// epoch turns `extract(epoch from ts)` text into a time (nil for NULL).
func epoch(v []byte) (*time.Time, error) {
	if v == nil {
		return nil, nil
	}
	f, err := strconv.ParseFloat(string(v), 64)
	if err != nil {
		return nil, fmt.Errorf("bad epoch %q: %w", v, err)
	}
	sec, frac := math.Modf(f)
	t := time.Unix(int64(sec), int64(math.Round(frac*1e6))*1e3).UTC()
	return &t, nil
}

// Gather reads the server's archiving state, one statement at a time:
// whatever one statement cannot read (privileges, version) is noted and the
// rest still runs. It fails only when the server cannot be queried at all.
// It works on PostgreSQL 13 to 18. Reading everything needs superuser or
// pg_monitor (data_directory, pg_ls_archive_statusdir()).
func Gather(ctx context.Context, conn *pgconn.PgConn) (*Server, error) {
	s := &Server{Notes: []string{}}
	row, err := queryRow(ctx, conn, "SELECT current_setting('server_version_num'), pg_is_in_recovery()::text, extract(epoch from pg_postmaster_start_time())")
	if err != nil {
		return nil, fmt.Errorf("query the server: %w", err)
	}
	if s.VersionNum, err = strconv.Atoi(string(row[0])); err != nil {
		return nil, fmt.Errorf("server_version_num %q: %w", row[0], err)
	}
	s.InRecovery = string(row[1]) == "true"
	if t, err := epoch(row[2]); err == nil && t != nil {
		s.StartTime = *t
	}

	// pg_settings hides superuser-only settings from other roles: a missing
	// row is a setting this role cannot read.
	rows, err := query(ctx, conn, "SELECT name, setting, coalesce(unit, '') FROM pg_settings WHERE name IN ('archive_mode', 'archive_command', 'archive_library', 'data_directory', 'wal_segment_size')")
	if err != nil {
		s.note("pg_settings: %v", err)
	}
	for _, r := range rows {
		v := string(r[1])
		switch string(r[0]) {
		case "archive_mode":
			s.ArchiveMode = v
		case "archive_command":
			s.ArchiveCommand, s.ArchiveCommandShown, s.CommandKnown = v, RedactCommand(v), true
		case "archive_library":
			s.ArchiveLibrary = v
		case "data_directory":
			s.DataDirectory = v
		case "wal_segment_size":
			n, err := settingBytes(v, string(r[2]))
			if err != nil {
				s.note("wal_segment_size: %v", err)
			} else {
				s.WALSegmentSize = uint32(n)
			}
		}
	}
	if s.ArchiveMode == "" {
		s.note("archive_mode is not readable by this role")
	}
	if !s.CommandKnown {
		s.note("archive_command is not readable by this role (needs superuser or pg_read_all_settings)")
	}

	if row, err := queryRow(ctx, conn, "SELECT system_identifier::text FROM pg_control_system()"); err != nil {
		s.note("pg_control_system(): %v", err)
	} else {
		s.SystemID = string(row[0])
	}

	if s.Archiver, err = readArchiver(ctx, conn); err != nil {
		s.note("pg_stat_archiver: %v", err)
	}

	if err := s.readPosition(ctx, conn); err != nil {
		s.note("current WAL position: %v", err)
	}

	s.countReady(ctx, conn)
	return s, nil
}

// settingBytes converts a pg_settings value and unit to bytes.
func settingBytes(v, unit string) (int64, error) {
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%q is not a number", v)
	}
	mult := map[string]int64{"": 1, "B": 1, "kB": 1 << 10, "8kB": 8 << 10, "MB": 1 << 20, "16MB": 16 << 20, "GB": 1 << 30}
	m, ok := mult[unit]
	if !ok {
		return 0, fmt.Errorf("unknown unit %q", unit)
	}
	return n * m, nil
}

func readArchiver(ctx context.Context, conn *pgconn.PgConn) (*Archiver, error) {
	row, err := queryRow(ctx, conn, `SELECT archived_count, coalesce(last_archived_wal, ''), extract(epoch from last_archived_time),
		failed_count, coalesce(last_failed_wal, ''), extract(epoch from last_failed_time), extract(epoch from stats_reset)
		FROM pg_stat_archiver`)
	if err != nil {
		return nil, err
	}
	a := &Archiver{LastArchivedWAL: string(row[1]), LastFailedWAL: string(row[4])}
	var errs []error
	var e error
	a.ArchivedCount, e = strconv.ParseInt(string(row[0]), 10, 64)
	errs = append(errs, e)
	a.FailedCount, e = strconv.ParseInt(string(row[3]), 10, 64)
	errs = append(errs, e)
	a.LastArchivedTime, e = epoch(row[2])
	errs = append(errs, e)
	a.LastFailedTime, e = epoch(row[5])
	errs = append(errs, e)
	a.StatsReset, e = epoch(row[6])
	errs = append(errs, e)
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return a, nil
}

// readPosition finds the segment being written. pg_walfile_name() refuses
// to run during recovery, so on a standby the name is built from the replay
// position and the timeline of the last checkpoint (or restartpoint).
func (s *Server) readPosition(ctx context.Context, conn *pgconn.PgConn) error {
	if !s.InRecovery {
		row, err := queryRow(ctx, conn, "SELECT pg_walfile_name(l), l::text FROM pg_current_wal_lsn() l")
		if err != nil {
			return err
		}
		s.CurrentWAL, s.CurrentLSN = string(row[0]), string(row[1])
		// pg_walfile_name() names the segment holding the byte before the
		// LSN: right after a switch, the segment just completed. The
		// segment being written is the one the LSN is in.
		lsn, err := wal.ParseLSN(s.CurrentLSN)
		if err == nil && wal.ValidSegSize(s.WALSegmentSize) && len(s.CurrentWAL) == 24 {
			if tli, err := strconv.ParseUint(s.CurrentWAL[:8], 16, 32); err == nil {
				s.CurrentWAL = wal.SegmentFileName(uint32(tli), uint64(lsn)/uint64(s.WALSegmentSize), s.WALSegmentSize)
			}
		}
		return nil
	}
	row, err := queryRow(ctx, conn, "SELECT coalesce(pg_last_wal_replay_lsn()::text, '')")
	if err != nil {
		return err
	}
	if s.CurrentLSN = string(row[0]); s.CurrentLSN == "" {
		return errors.New("the standby has replayed nothing yet")
	}
	lsn, err := wal.ParseLSN(s.CurrentLSN)
	if err != nil {
		return err
	}
	if !wal.ValidSegSize(s.WALSegmentSize) {
		return errors.New("wal_segment_size is unknown")
	}
	var tli uint64 = 1
	if row, err := queryRow(ctx, conn, "SELECT timeline_id::text FROM pg_control_checkpoint()"); err == nil {
		if v, err := strconv.ParseUint(string(row[0]), 10, 32); err == nil && v > 0 {
			tli = v
		}
	} else if s.Archiver != nil {
		if n, err := wal.ParseName(s.Archiver.LastArchivedWAL); err == nil {
			tli = uint64(n.Timeline)
		}
	}
	s.CurrentWAL = wal.SegmentFileName(uint32(tli), uint64(lsn)/uint64(s.WALSegmentSize), s.WALSegmentSize)
	return nil
}

// countReady counts the .ready files of pg_wal/archive_status: in the data
// directory when this process can read it and it belongs to this very server
// (postmaster.pid names the directory and the server's start time), else
// with pg_ls_archive_statusdir() (PostgreSQL 12 and later; superuser or
// pg_monitor).
func (s *Server) countReady(ctx context.Context, conn *pgconn.PgConn) {
	var localErr error
	if s.DataDirectory == "" {
		localErr = errors.New("data_directory is not readable by this role")
	} else {
		n, err := countReadyLocal(s.DataDirectory, s.StartTime)
		if err == nil {
			s.ReadyFiles, s.ReadySource = &n, filepath.Join(s.DataDirectory, "pg_wal", "archive_status")
			return
		}
		localErr = err
	}
	row, err := queryRow(ctx, conn, "SELECT count(*) FROM pg_ls_archive_statusdir() WHERE name LIKE '%.ready'")
	if err == nil {
		if n, err := strconv.Atoi(string(row[0])); err == nil {
			s.ReadyFiles, s.ReadySource = &n, "pg_ls_archive_statusdir()"
			return
		}
	}
	s.note(".ready files unknown: %v; pg_ls_archive_statusdir(): %v (needs superuser or pg_monitor)", localErr, err)
}

// countReadyLocal counts .ready files under dataDir after making sure that
// the directory is the one of the server that started at start: another
// cluster may live at the same path on this host.
func countReadyLocal(dataDir string, start time.Time) (int, error) {
	b, err := os.ReadFile(filepath.Join(dataDir, "postmaster.pid"))
	if err != nil {
		return 0, err
	}
	lines := strings.Split(string(b), "\n")
	if len(lines) < 3 || filepath.Clean(strings.TrimSpace(lines[1])) != filepath.Clean(dataDir) {
		return 0, fmt.Errorf("%s/postmaster.pid does not name this data directory", dataDir)
	}
	pidStart, err := strconv.ParseInt(strings.TrimSpace(lines[2]), 10, 64)
	if err != nil || start.IsZero() || math.Abs(float64(pidStart-start.Unix())) > 2 {
		return 0, fmt.Errorf("%s on this host belongs to another server than the one connected to", dataDir)
	}
	ents, err := os.ReadDir(filepath.Join(dataDir, "pg_wal", "archive_status"))
	if err != nil {
		return 0, err
	}
	n := 0
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ".ready") {
			n++
		}
	}
	return n, nil
}

// RestorePoint is the name of the restore point the probe creates.
const RestorePoint = "pgark_check"

// ProbeResult is the outcome of the end-to-end probe.
type ProbeResult struct {
	// Skipped says why the probe did not run (empty when it ran).
	Skipped string `json:"skipped,omitempty"`
	// Error is why it could not start (for example missing privileges).
	Error         string  `json:"error,omitempty"`
	RestorePoint  string  `json:"restore_point,omitempty"`
	LSN           string  `json:"lsn,omitempty"`
	Segment       string  `json:"segment,omitempty"`
	Archived      bool    `json:"archived"`
	WaitedSeconds float64 `json:"waited_seconds"`
	Timeout       float64 `json:"timeout_seconds"`
	// Archiver is pg_stat_archiver when the probe timed out.
	Archiver *Archiver `json:"archiver,omitempty"`
}

// Stater finds an object in the repository (storage.Store has it).
type Stater interface {
	Stat(ctx context.Context, key string) (storage.ObjectInfo, error)
}

// Probe checks archiving end to end, as `pgbackrest check` does: it writes
// a restore point (so that the switch is never a no-op on an idle server),
// switches to a new WAL segment, and waits up to timeout for the completed
// segment to appear in the repository. SQL failures (privileges:
// pg_create_restore_point() and pg_switch_wal() need superuser or EXECUTE
// granted) are reported in the result; the error is for a repository that
// cannot be read.
func Probe(ctx context.Context, conn *pgconn.PgConn, st Stater, timeout time.Duration) (*ProbeResult, error) {
	p := &ProbeResult{RestorePoint: RestorePoint, Timeout: timeout.Seconds()}
	if _, err := query(ctx, conn, "SELECT pg_create_restore_point('"+RestorePoint+"')"); err != nil {
		p.Error = storage.OneLine(fmt.Sprintf("pg_create_restore_point(): %v", err))
		return p, nil
	}
	row, err := queryRow(ctx, conn, "SELECT l::text, pg_walfile_name(l) FROM pg_switch_wal() l")
	if err != nil {
		p.Error = storage.OneLine(fmt.Sprintf("pg_switch_wal(): %v", err))
		return p, nil
	}
	p.LSN, p.Segment = string(row[0]), string(row[1])
	n, err := wal.ParseName(p.Segment)
	if err != nil {
		return nil, fmt.Errorf("pg_walfile_name(): %w", err)
	}
	key := wal.ObjectKey(n)
	start := time.Now()
	deadline := start.Add(timeout)
	wait := 100 * time.Millisecond
	for {
		_, err := st.Stat(ctx, key)
		if err == nil {
			p.Archived = true
			break
		}
		if !storage.IsNotFound(err) {
			return nil, fmt.Errorf("look for %s in the repository: %w", p.Segment, err)
		}
		if !time.Now().Before(deadline) {
			break
		}
		t := time.NewTimer(min(wait, time.Until(deadline)))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-t.C:
		}
		wait = min(wait*2, time.Second)
	}
	p.WaitedSeconds = math.Round(time.Since(start).Seconds()*1000) / 1000
	if !p.Archived {
		p.Archiver, _ = readArchiver(ctx, conn)
	}
	return p, nil
}
