package health

import (
	"bufio"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

// Summary is the first line of the human report (Nagios shows it): the
// overall status and the messages of the checks that are not OK.
func (r *Result) Summary() string {
	var bad []string
	for _, c := range r.Checks {
		if c.Status != OK {
			bad = append(bad, c.Name+": "+c.Message)
		}
	}
	if len(bad) == 0 {
		return fmt.Sprintf("PGARK CHECK OK - %d checks passed", len(r.Checks))
	}
	return "PGARK CHECK " + strings.ToUpper(r.Status.String()) + " - " + strings.Join(bad, "; ")
}

// WriteText writes the human report: the summary, then one line per check.
func WriteText(w io.Writer, r *Result) error {
	bw := bufio.NewWriter(w)
	fmt.Fprintln(bw, r.Summary())
	width := 0
	for _, c := range r.Checks {
		width = max(width, len(c.Name))
	}
	for _, c := range r.Checks {
		fmt.Fprintf(bw, "%-8s  %-*s  %s\n", strings.ToUpper(c.Status.String()), width, c.Name, c.Message)
	}
	return bw.Flush()
}

// promWriter writes metric families in the Prometheus text format
// (version 0.0.4), as node_exporter's textfile collector reads it.
type promWriter struct {
	w *bufio.Writer
}

type sample struct {
	labels string // `{k="v",...}` or ""
	value  float64
}

func (p promWriter) family(name, typ, help string, samples ...sample) {
	if len(samples) == 0 {
		return
	}
	fmt.Fprintf(p.w, "# HELP %s %s\n# TYPE %s %s\n", name, escapeHelp(help), name, typ)
	for _, s := range samples {
		fmt.Fprintf(p.w, "%s%s %s\n", name, s.labels, strconv.FormatFloat(s.value, 'f', -1, 64))
	}
}

func escapeHelp(s string) string {
	return strings.NewReplacer(`\`, `\\`, "\n", `\n`).Replace(s)
}

func escapeLabel(s string) string {
	return strings.NewReplacer(`\`, `\\`, "\n", `\n`, `"`, `\"`).Replace(s)
}

func one(v float64) []sample { return []sample{{value: v}} }

func unixSeconds(t time.Time) float64 { return float64(t.UnixMilli()) / 1000 }

// WritePrometheus writes the result as metrics named pgark_*. Metrics whose
// value is unknown are left out, rather than reported as 0.
func WritePrometheus(w io.Writer, r *Result) error {
	p := promWriter{bufio.NewWriter(w)}
	p.family("pgark_check_status", "gauge", "Overall result of pgark check: 0 ok, 1 warning, 2 critical, 3 unknown (the check could not run).", one(float64(r.Status))...)
	var checks []sample
	for _, c := range r.Checks {
		checks = append(checks, sample{labels: `{check="` + escapeLabel(c.Name) + `"}`, value: float64(c.Status)})
	}
	p.family("pgark_check_result", "gauge", "Result of each check of pgark check: 0 ok, 1 warning, 2 critical.", checks...)
	if r.Repository != "" {
		p.family("pgark_repository_info", "gauge", "The repository pgark check looked at.", sample{labels: `{repo="` + escapeLabel(r.Repository) + `"}`, value: 1})
	}
	if b := r.NewestBackup; b != nil {
		p.family("pgark_last_backup_timestamp_seconds", "gauge", "Stop time of the newest complete backup, in seconds since the epoch.", one(unixSeconds(b.StopTime))...)
		p.family("pgark_last_backup_size_bytes", "gauge", "Size of the newest complete backup's tar streams, before compression.", one(float64(b.RawBytes))...)
		p.family("pgark_last_backup_stored_bytes", "gauge", "Size of the newest complete backup in the repository (compressed, encrypted).", one(float64(b.StoredBytes))...)
	}
	p.family("pgark_backups", "gauge", "Number of complete backups in the repository.", one(float64(r.Backups))...)
	if r.LagSegments != nil {
		p.family("pgark_archive_lag_segments", "gauge", "Complete WAL segments not archived yet (from pg_stat_archiver's last archived segment to the segment being written).", one(float64(*r.LagSegments))...)
	}
	if r.ReadyFiles != nil {
		p.family("pgark_archive_ready_files", "gauge", "Files waiting for archive_command (.ready files in pg_wal/archive_status).", one(float64(*r.ReadyFiles))...)
	}
	if a := r.Archiver; a != nil {
		p.family("pgark_archive_failed_total", "counter", "Failed archive_command runs since the statistics reset (pg_stat_archiver.failed_count).", one(float64(a.FailedCount))...)
		p.family("pgark_archived_total", "counter", "Files archived since the statistics reset (pg_stat_archiver.archived_count).", one(float64(a.ArchivedCount))...)
		failing := 0.0
		if a.Failing() {
			failing = 1
		}
		p.family("pgark_archive_failing", "gauge", "1 when the archiver's newest attempt failed (last_failed_time after last_archived_time).", one(failing)...)
	}
	if pr := r.Probe; pr != nil && pr.Skipped == "" && pr.Error == "" {
		ok := 0.0
		if pr.Archived {
			ok = 1
		}
		p.family("pgark_probe_success", "gauge", "1 when the probe's WAL segment reached the repository within --check-timeout.", one(ok)...)
		p.family("pgark_probe_duration_seconds", "gauge", "Time from the probe's WAL switch until its segment was in the repository (or the timeout).", one(pr.WaitedSeconds)...)
	}
	if win := r.Window; win != nil {
		p.family("pgark_recovery_window_start_timestamp_seconds", "gauge", "Earliest time a restore can reach: the consistency point of the oldest backup with unbroken WAL after it.", one(unixSeconds(win.FromTime))...)
		p.family("pgark_recovery_window_end_timestamp_seconds", "gauge", "When the newest continuously archived segment was stored: the latest reachable time is at most this.", one(unixSeconds(win.ToArchivedAt))...)
	}
	p.family("pgark_wal_gaps", "gauge", "Runs of missing WAL segments from the oldest backup to the newest segment, on the newest timeline's history.", one(float64(len(r.Gaps)))...)
	p.family("pgark_wal_missing_segments", "gauge", "WAL segments missing in those gaps.", one(float64(r.MissingSegments))...)
	dropped := 0
	for _, d := range r.DroppedWAL {
		dropped += d.Count
	}
	p.family("pgark_wal_dropped_segments", "gauge", "WAL segments that wal-push dropped under archive-queue-max (gap records in the repository).", one(float64(dropped))...)
	drillMetrics(p, r)
	return p.w.Flush()
}

// WriteUnknownPrometheus writes the metrics of a check that could not run.
func WriteUnknownPrometheus(w io.Writer) error {
	p := promWriter{bufio.NewWriter(w)}
	p.family("pgark_check_status", "gauge", "Overall result of pgark check: 0 ok, 1 warning, 2 critical, 3 unknown (the check could not run).", one(float64(Unknown))...)
	return p.w.Flush()
}
