package drill

import (
	"bufio"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/pgark/pgark/internal/human"
)

// WriteText writes the human report of a drill.
func WriteText(w io.Writer, r *Record) error {
	bw := bufio.NewWriter(w)
	if r.Passed() {
		fmt.Fprintf(bw, "DRILL PASSED - backup %s restored and recovered to %s in %.1fs\n", r.Backup, r.Target, r.RecoverySeconds)
	} else {
		fmt.Fprintf(bw, "DRILL FAILED (%s) - %s\n", r.Phase, r.Error)
	}
	row := func(k, v string) { fmt.Fprintf(bw, "  %-18s %s\n", k, v) }
	row("drill", r.ID)
	row("backup", fmt.Sprintf("%s (PostgreSQL %d, consistent at %s)", r.Backup, r.PGMajor, r.BackupStopLSN))
	row("target", r.Target)
	if r.ReachedLSN != "" {
		reached := "LSN " + r.ReachedLSN
		if r.ReachedTime != nil {
			reached += ", last transaction " + r.ReachedTime.Format(time.RFC3339)
		}
		if r.ReachedTimeline > 0 {
			reached += fmt.Sprintf(", now on timeline %d", r.ReachedTimeline)
		}
		row("reached", reached)
	}
	row("wal segments", strconv.Itoa(r.WALSegments))
	row("data", human.Bytes(r.DataBytes))
	row("restore", fmt.Sprintf("%.1fs", r.RestoreSeconds))
	row("replay", fmt.Sprintf("%.1fs", r.ReplaySeconds))
	row("checks", fmt.Sprintf("%.1fs", r.CheckSeconds))
	row("recovery time", fmt.Sprintf("%.1fs (restore + replay)", r.RecoverySeconds))
	row("total", fmt.Sprintf("%.1fs", r.TotalSeconds))
	for _, c := range r.Checks {
		fmt.Fprintf(bw, "%-8s  %-18s %s\n", strings.ToUpper(c.Status), c.Name, c.Message)
	}
	return bw.Flush()
}

// WritePrometheus writes the drill's metrics (text format 0.0.4, for node_exporter's
// textfile collector). Metrics whose value is unknown are left out.
func WritePrometheus(w io.Writer, r *Record) error {
	bw := bufio.NewWriter(w)
	fam := func(name, help string, v float64) {
		fmt.Fprintf(bw, "# HELP %s %s\n# TYPE %s gauge\n%s %s\n", name, help, name, name, strconv.FormatFloat(v, 'f', -1, 64))
	}
	ok := 0.0
	if r.Passed() {
		ok = 1
	}
	fam("pgark_drill_success", "1 when the last restore drill passed every check, 0 when it failed.", ok)
	fam("pgark_drill_timestamp_seconds", "When the last restore drill finished, in seconds since the epoch.", float64(r.FinishedAt.UnixMilli())/1000)
	fam("pgark_drill_restore_seconds", "Seconds the last drill spent restoring the backup.", r.RestoreSeconds)
	fam("pgark_drill_replay_seconds", "Seconds the last drill spent replaying WAL until promotion.", r.ReplaySeconds)
	fam("pgark_drill_check_seconds", "Seconds the last drill spent on its checks.", r.CheckSeconds)
	fam("pgark_drill_recovery_seconds", "Restore plus replay seconds of the last drill: the measured recovery time.", r.RecoverySeconds)
	fam("pgark_drill_total_seconds", "Total seconds of the last drill.", r.TotalSeconds)
	fam("pgark_drill_wal_segments", "WAL segments the last drill replayed.", float64(r.WALSegments))
	fam("pgark_drill_data_bytes", "Bytes the last drill restored (before compression).", float64(r.DataBytes))
	if r.ReachedTime != nil {
		fam("pgark_drill_reached_timestamp_seconds", "Time of the last transaction the last drill replayed.", float64(r.ReachedTime.UnixMilli())/1000)
	}
	return bw.Flush()
}
