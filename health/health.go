// Package health decides whether a server's WAL archiving into a pgark
// repository, and the repository itself, are healthy: archive_mode and
// archive_command, pg_stat_archiver, the archiving backlog in segments, an
// end-to-end probe, the newest backup's age, and the recoverable window.
// Gather and Probe talk to PostgreSQL; Evaluate and the output functions are
// pure.
package health

import (
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/pgark/pgark/catalog"
	"github.com/pgark/pgark/walgap"
	"github.com/pgark/pgark/walinventory"
)

// Status is a check's outcome, with the Nagios plugin values.
type Status int

// The statuses, in increasing severity (Unknown: the check could not run).
const (
	OK       Status = 0
	Warning  Status = 1
	Critical Status = 2
	Unknown  Status = 3
)

func (s Status) String() string {
	switch s {
	case OK:
		return "ok"
	case Warning:
		return "warning"
	case Critical:
		return "critical"
	}
	return "unknown"
}

// MarshalJSON writes the status as its name.
func (s Status) MarshalJSON() ([]byte, error) { return json.Marshal(s.String()) }

// Check is one line of the report. Details are extra JSON fields of the
// check's object.
type Check struct {
	Name    string
	Status  Status
	Message string
	Details map[string]any
}

// MarshalJSON writes {"name", "status", "message", ...details}.
func (c Check) MarshalJSON() ([]byte, error) {
	m := map[string]any{}
	for k, v := range c.Details {
		m[k] = v
	}
	m["name"], m["status"], m["message"] = c.Name, c.Status, c.Message
	return json.Marshal(m)
}

// Limits are the thresholds of the checks.
type Limits struct {
	// MaxArchiveLag is the number of complete segments waiting to be
	// archived above which archiving is behind (warning).
	MaxArchiveLag int
	// MaxBackupAge is the age of the newest backup above which it is a
	// warning; 0 does not check the age.
	MaxBackupAge time.Duration
	// MaxDrillAge is the age of the last successful restore drill above
	// which it is a warning; 0 does not check the age.
	MaxDrillAge time.Duration
}

// Inputs is everything Evaluate decides on.
type Inputs struct {
	Now        time.Time
	Repository string
	// RepoSystemID is the repository's bound cluster ("" when not bound).
	RepoSystemID string
	Server       *Server
	Command      CommandUse
	Probe        *ProbeResult
	Report       *walinventory.Report
	// LastDrill and LastSuccessfulDrill are the recorded restore drills
	// (nil: none).
	LastDrill, LastSuccessfulDrill *DrillSummary
}

// Result is the whole report; its JSON form is `pgark check --json`
// (format 1; consumers should ignore fields they do not know).
type Result struct {
	Format      int                  `json:"format"`
	Status      Status               `json:"status"`
	Repository  string               `json:"repository"`
	Checks      []Check              `json:"checks"`
	Server      *Server              `json:"server"`
	Archiver    *Archiver            `json:"archiver"`
	LagSegments *int64               `json:"lag_segments"`
	ReadyFiles  *int                 `json:"ready_files"`
	Probe       *ProbeResult         `json:"probe"`
	Window      *walinventory.Window `json:"window"`
	Gaps        []walinventory.Gap   `json:"gaps"`
	// MissingSegments is the number of segments in all gaps.
	MissingSegments  int            `json:"missing_segments"`
	MissingHistories []uint32       `json:"missing_histories"`
	NewestBackup     *BackupSummary `json:"newest_backup"`
	Backups          int            `json:"backups"`

	// DroppedWAL are the ranges wal-push dropped under archive-queue-max.
	DroppedWAL []walgap.Range `json:"dropped_wal"`
	// The restore drills (pgark drill); nil when none is recorded.
	LastDrill           *DrillSummary `json:"last_drill"`
	LastSuccessfulDrill *DrillSummary `json:"last_successful_drill"`
}

// BackupSummary describes the newest backup.
type BackupSummary struct {
	ID          string    `json:"id"`
	StopTime    time.Time `json:"stop_time"`
	AgeSeconds  float64   `json:"age_seconds"`
	EndLSN      string    `json:"end_lsn"`
	Timeline    uint32    `json:"timeline"`
	RawBytes    int64     `json:"raw_bytes"`
	StoredBytes int64     `json:"stored_bytes"`
}

// Check names, in report order.
const (
	CheckCluster        = "cluster"
	CheckArchiveMode    = "archive_mode"
	CheckArchiveCommand = "archive_command"
	CheckArchiver       = "archiver"
	CheckArchiveLag     = "archive_lag"
	CheckProbe          = "probe"
	CheckNewestBackup   = "newest_backup"
	CheckContinuity     = "wal_continuity"
	CheckWindow         = "recovery_window"
)

// Evaluate turns the gathered facts into checks and an overall status (the
// most severe check's).
func Evaluate(in Inputs, lim Limits) *Result {
	r := &Result{Format: 1, Repository: in.Repository, Server: in.Server, Probe: in.Probe,
		Gaps: []walinventory.Gap{}, MissingHistories: []uint32{}}
	srv := in.Server
	if srv == nil {
		srv = &Server{}
	}
	r.Archiver = srv.Archiver
	r.ReadyFiles = srv.ReadyFiles
	if in.Probe == nil {
		r.Probe = &ProbeResult{Skipped: "not run"}
	}
	if a := srv.Archiver; a != nil && a.LastArchivedWAL != "" && srv.CurrentWAL != "" {
		if lag, err := ArchiveLag(a.LastArchivedWAL, srv.CurrentWAL, srv.WALSegmentSize); err == nil {
			r.LagSegments = &lag
		}
	}
	rep := in.Report
	if rep == nil {
		rep = &walinventory.Report{}
	}
	r.Window = rep.Window
	r.Gaps = append(r.Gaps, rep.Gaps...)
	for _, g := range rep.Gaps {
		r.MissingSegments += g.Count
	}
	r.MissingHistories = append(r.MissingHistories, rep.MissingHistories...)
	r.DroppedWAL = append([]walgap.Range{}, rep.Dropped...)
	r.Backups = len(rep.Backups)
	var newest *catalog.Meta
	if n := len(rep.Backups); n > 0 {
		newest = rep.Backups[n-1] // sorted by catalog.SortBackups
		r.NewestBackup = &BackupSummary{ID: newest.ID, StopTime: newest.StopTime,
			AgeSeconds: in.Now.Sub(newest.StopTime).Round(time.Second).Seconds(),
			EndLSN:     newest.EndLSN, Timeline: newest.EndTimeline, RawBytes: newest.RawBytes, StoredBytes: newest.StoredBytes}
	}

	r.Checks = []Check{
		checkCluster(srv, in.RepoSystemID, rep),
		checkArchiveMode(srv),
		checkArchiveCommand(srv, in.Command),
		checkArchiver(srv),
		checkLag(srv, r.LagSegments, lim.MaxArchiveLag),
		checkProbe(r.Probe),
		checkNewestBackup(newest, in.Now, lim.MaxBackupAge),
		checkContinuity(rep),
		checkDropped(rep), // archive-queue-max
		checkWindow(rep),
		checkLastDrill(in.LastDrill, in.LastSuccessfulDrill, in.Now, lim.MaxDrillAge),
	}
	r.LastDrill, r.LastSuccessfulDrill = in.LastDrill, in.LastSuccessfulDrill
	for _, d := range []*DrillSummary{r.LastDrill, r.LastSuccessfulDrill} {
		if d != nil {
			d.AgeSeconds = in.Now.Sub(d.FinishedAt).Round(time.Second).Seconds()
		}
	}
	for _, c := range r.Checks {
		r.Status = max(r.Status, c.Status)
	}
	return r
}

func checkCluster(srv *Server, repoSysID string, rep *walinventory.Report) Check {
	c := Check{Name: CheckCluster, Details: map[string]any{"server_system_identifier": srv.SystemID, "repository_system_identifier": repoSysID}}
	tli := srv.Timeline()
	switch {
	// A standby's timeline is only known from its last restartpoint: not
	// compared.
	case repoSysID != "" && srv.SystemID == repoSysID && !srv.InRecovery && tli != 0 && rep.From != "" && tli != rep.Timeline:
		c.Status = Warning
		c.Message = fmt.Sprintf("the repository's newest timeline is %d, the server is on timeline %d", rep.Timeline, tli)
		if rep.Timeline > tli {
			c.Message += ": another server of this cluster (a restored copy, a promoted standby) archived into this repository; the window and a restore to \"latest\" follow that timeline, not this server's"
		} else {
			c.Message += ": this server's timeline history file is not archived yet"
		}
	case repoSysID == "":
		c.Message = "the repository is not bound to a cluster yet (nothing archived)"
	case srv.SystemID == "":
		c.Message = "not compared: the server's system identifier is not readable (pg_control_system())"
	case srv.SystemID != repoSysID:
		c.Status = Critical
		c.Message = fmt.Sprintf("the server (system identifier %s) is not the repository's cluster (%s): wrong connection settings or wrong repository", srv.SystemID, repoSysID)
	default:
		c.Message = "the server is the repository's cluster (system identifier " + srv.SystemID + ")"
	}
	return c
}

func checkArchiveMode(srv *Server) Check {
	c := Check{Name: CheckArchiveMode, Details: map[string]any{"archive_mode": srv.ArchiveMode, "in_recovery": srv.InRecovery}}
	switch {
	case srv.ArchiveMode == "":
		c.Status, c.Message = Warning, "archive_mode is not readable by this role"
	case srv.InRecovery && srv.ArchiveMode == "always":
		c.Message = "standby with archive_mode = always: it archives the WAL it receives"
	case srv.InRecovery && srv.ArchiveMode == "on":
		c.Message = "standby with archive_mode = on: the primary archives, this standby does not (it will once promoted)"
	case srv.InRecovery:
		c.Status, c.Message = Warning, "standby with archive_mode = "+srv.ArchiveMode+": once promoted it would archive nothing"
	case srv.ArchiveMode == "off":
		c.Status, c.Message = Critical, "archive_mode = off: the server archives no WAL (set archive_mode = on and restart)"
	default:
		c.Message = "archive_mode = " + srv.ArchiveMode
	}
	return c
}

func checkArchiveCommand(srv *Server, use CommandUse) Check {
	c := Check{Name: CheckArchiveCommand, Details: map[string]any{"archive_command": srv.ArchiveCommandShown, "uses_repository": use.Verdict}}
	if srv.ArchiveLibrary != "" {
		c.Details["archive_library"] = srv.ArchiveLibrary
		c.Details["uses_repository"] = UsesNo
		c.Status, c.Message = Warning, fmt.Sprintf("archive_library = %q is set: the server archives through it, not through archive_command and pgark", srv.ArchiveLibrary)
		return c
	}
	if !srv.CommandKnown {
		c.Details["uses_repository"] = UsesUnknown
		c.Status, c.Message = Warning, "archive_command is not readable by this role (superuser or pg_read_all_settings, e.g. pg_monitor, can read it)"
		return c
	}
	if strings.TrimSpace(srv.ArchiveCommand) == "" {
		c.Status, c.Message = Warning, "archive_command is empty"
		if srv.Archives() {
			c.Status, c.Message = Critical, "archive_command is empty while archive_mode = "+srv.ArchiveMode+": nothing is archived and WAL piles up in pg_wal"
		}
		return c
	}
	switch use.Verdict {
	case UsesYes:
		c.Message = "archive_command runs " + use.Reason
	case UsesNo:
		c.Status, c.Message = Warning, "archive_command does not archive into this repository: "+use.Reason
	default:
		c.Status, c.Message = Warning, "cannot tell whether archive_command archives into this repository: "+use.Reason
	}
	return c
}

func fmtTime(t *time.Time) string {
	if t == nil {
		return "never"
	}
	return t.UTC().Format("2006-01-02 15:04:05Z")
}

func checkArchiver(srv *Server) Check {
	c := Check{Name: CheckArchiver}
	a := srv.Archiver
	if !srv.Archives() {
		c.Message = "not checked: this server does not archive (archive_mode = " + srv.ArchiveMode + ")"
		if srv.ArchiveMode == "" {
			c.Message = "not checked: archive_mode is unknown"
		}
		if a != nil && srv.InRecovery {
			c.Message += fmt.Sprintf("; its pg_stat_archiver: %d archived, %d failed", a.ArchivedCount, a.FailedCount)
		}
		return c
	}
	if a == nil {
		c.Status, c.Message = Warning, "pg_stat_archiver is not readable"
		return c
	}
	c.Details = map[string]any{"archived_count": a.ArchivedCount, "failed_count": a.FailedCount,
		"last_archived_wal": a.LastArchivedWAL, "last_failed_wal": a.LastFailedWAL}
	last := "nothing archived"
	if a.LastArchivedWAL != "" {
		last = fmt.Sprintf("last archived %s at %s", a.LastArchivedWAL, fmtTime(a.LastArchivedTime))
	}
	if a.Failing() {
		c.Status = Critical
		c.Message = fmt.Sprintf("archiving is failing: archive_command failed for %s at %s (%d %s since %s); %s; see the server log",
			a.LastFailedWAL, fmtTime(a.LastFailedTime), a.FailedCount, plural(int(a.FailedCount), "failure", "failures"), statsSince(a), last)
		return c
	}
	c.Message = fmt.Sprintf("%d archived, %s; %d failed", a.ArchivedCount, last, a.FailedCount)
	if a.LastFailedWAL != "" {
		c.Message += fmt.Sprintf(" (last %s at %s, since recovered)", a.LastFailedWAL, fmtTime(a.LastFailedTime))
	}
	return c
}

func statsSince(a *Archiver) string {
	if a.StatsReset == nil {
		return "the statistics began"
	}
	return "the statistics reset at " + fmtTime(a.StatsReset)
}

func checkLag(srv *Server, lag *int64, maxLag int) Check {
	c := Check{Name: CheckArchiveLag, Details: map[string]any{"lag_segments": lag, "ready_files": srv.ReadyFiles, "max_archive_lag": maxLag, "current_wal": srv.CurrentWAL}}
	if !srv.Archives() {
		c.Message = "not checked: this server does not archive"
		return c
	}
	ready := "unknown"
	if srv.ReadyFiles != nil {
		ready = strconv.Itoa(*srv.ReadyFiles)
	}
	switch {
	case lag != nil:
		c.Message = fmt.Sprintf("%d complete %s waiting to be archived (last archived %s, now in %s), %s .ready files", *lag, plural(int(*lag), "segment", "segments"), srv.Archiver.LastArchivedWAL, srv.CurrentWAL, ready)
		if *lag > int64(maxLag) {
			c.Status = Warning
			c.Message += fmt.Sprintf(": more than --max-archive-lag %d", maxLag)
		}
	case srv.ReadyFiles != nil:
		c.Message = fmt.Sprintf("segments behind unknown (no segment archived since the statistics reset, or the last archived file is not a segment), %s .ready files", ready)
		if *srv.ReadyFiles > maxLag {
			c.Status = Warning
			c.Message += fmt.Sprintf(": more than --max-archive-lag %d", maxLag)
		}
	default:
		c.Status, c.Message = Warning, "unknown: neither the archiving position nor the .ready files could be read"
	}
	return c
}

func checkProbe(p *ProbeResult) Check {
	c := Check{Name: CheckProbe}
	switch {
	case p.Skipped != "":
		c.Message = "skipped: " + p.Skipped
	case p.Error != "":
		c.Status, c.Message = Warning, "could not run: "+p.Error+" (pg_create_restore_point() and pg_switch_wal() need superuser or EXECUTE granted; or use --no-probe)"
	case p.Archived:
		c.Message = fmt.Sprintf("restore point and WAL switch at %s: %s reached the repository in %.1fs", p.LSN, p.Segment, p.WaitedSeconds)
	default:
		c.Status = Critical
		c.Message = fmt.Sprintf("restore point and WAL switch at %s: %s is not in the repository after %.0fs", p.LSN, p.Segment, p.WaitedSeconds)
		if a := p.Archiver; a != nil {
			c.Message += fmt.Sprintf(" (pg_stat_archiver: last archived %s at %s", orNone(a.LastArchivedWAL), fmtTime(a.LastArchivedTime))
			if a.LastFailedWAL != "" {
				c.Message += fmt.Sprintf(", last failed %s at %s", a.LastFailedWAL, fmtTime(a.LastFailedTime))
			}
			c.Message += ")"
		}
	}
	return c
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

func checkNewestBackup(m *catalog.Meta, now time.Time, maxAge time.Duration) Check {
	c := Check{Name: CheckNewestBackup}
	if m == nil {
		c.Status, c.Message = Critical, "no complete backup in the repository"
		return c
	}
	age := now.Sub(m.StopTime)
	c.Details = map[string]any{"id": m.ID, "age_seconds": age.Round(time.Second).Seconds()}
	c.Message = fmt.Sprintf("%s, finished %s ago (%s)", m.ID, roundAge(age), m.StopTime.UTC().Format("2006-01-02 15:04:05Z"))
	if maxAge > 0 && age > maxAge {
		c.Status = Warning
		c.Message += fmt.Sprintf(": older than --max-backup-age %s", maxAge)
	}
	return c
}

func roundAge(d time.Duration) time.Duration {
	if d < time.Minute {
		return d.Round(time.Second)
	}
	return d.Round(time.Minute)
}

func checkContinuity(rep *walinventory.Report) Check {
	c := Check{Name: CheckContinuity}
	if rep.From == "" {
		c.Message = "no WAL archived on the newest timeline"
		return c
	}
	var msgs []string
	var gaps []walinventory.Gap
	for _, g := range rep.Gaps {
		if g.Cause != walinventory.CauseDropped { // those: checkDropped
			gaps = append(gaps, g)
		}
	}
	if n := len(gaps); n > 0 {
		missing := 0
		var ranges []string
		for _, g := range gaps {
			missing += g.Count
			ranges = append(ranges, gapRange(g))
		}
		c.Details = map[string]any{"gaps": gaps}
		msgs = append(msgs, fmt.Sprintf("%d %s in the WAL archive (%d missing %s): %s", n, plural(n, "gap", "gaps"), missing, plural(missing, "segment", "segments"), strings.Join(ranges, ", ")))
	}
	if len(rep.MissingHistories) > 0 {
		msgs = append(msgs, "timeline history files missing for timelines "+joinTLIs(rep.MissingHistories))
	}
	if len(rep.UnreadableHistories) > 0 {
		msgs = append(msgs, "timeline history files unreadable (continuity guessed) for timelines "+joinTLIs(rep.UnreadableHistories))
	}
	if len(msgs) > 0 {
		c.Status, c.Message = Warning, strings.Join(msgs, "; ")
		return c
	}
	c.Message = fmt.Sprintf("no gaps from %s to %s (%d %s, timeline %d)", rep.From, rep.To, rep.Checked, plural(rep.Checked, "segment", "segments"), rep.Timeline)
	if len(gaps) < len(rep.Gaps) {
		c.Message = fmt.Sprintf("no gaps from %s to %s but those of WAL dropped by archive-queue-max (see %s)", rep.From, rep.To, CheckDropped)
	}
	return c
}

func gapRange(g walinventory.Gap) string {
	if g.First == g.Last {
		return g.First
	}
	return fmt.Sprintf("%s to %s (%d)", g.First, g.Last, g.Count)
}

// gapCause is ", dropped by archive-queue-max" or "" for a plain gap.
func gapCause(g walinventory.Gap) string {
	if g.Cause == "" {
		return ""
	}
	return ", " + g.Cause
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

func joinTLIs(t []uint32) string {
	s := append([]uint32(nil), t...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	parts := make([]string, len(s))
	for i, v := range s {
		parts[i] = strconv.FormatUint(uint64(v), 10)
	}
	return strings.Join(parts, ", ")
}

func checkWindow(rep *walinventory.Report) Check {
	c := Check{Name: CheckWindow}
	if w := rep.Window; w != nil {
		c.Message = fmt.Sprintf("restorable from backup %s (consistent at %s, %s) to the end of %s (archived %s)",
			w.FromBackup, w.FromTime.UTC().Format("2006-01-02 15:04:05Z"), w.FromLSN, w.ToSegment, w.ToArchivedAt.UTC().Format("2006-01-02 15:04:05Z"))
		if len(rep.Gaps) > 0 {
			c.Message += "; older backups are cut off by the gap"
		}
		return c
	}
	c.Status = Critical
	switch {
	case len(rep.Backups) == 0:
		c.Message = "nothing is restorable: no complete backup"
	case rep.To == "":
		c.Message = "nothing is restorable: no WAL archived on the newest timeline"
	case len(rep.Gaps) > 0:
		g := rep.Gaps[len(rep.Gaps)-1]
		c.Message = "nothing is restorable: no backup starts after the last WAL gap (" + gapRange(g) + gapCause(g) + "); take a backup"
		if w := rep.WindowBeforeGap; w != nil {
			c.Message += fmt.Sprintf("; before the gap, restorable from backup %s (consistent at %s, %s) to the end of %s",
				w.FromBackup, w.FromTime.UTC().Format("2006-01-02 15:04:05Z"), w.FromLSN, w.ToSegment)
		}
	default:
		c.Message = "nothing is restorable: no backup on the newest timeline with its WAL archived"
	}
	return c
}
