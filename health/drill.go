package health

import (
	"fmt"
	"time"
)

// CheckLastDrill is the check of the restore drills (pgark drill).
const CheckLastDrill = "last_drill"

// DrillSummary describes a recorded restore drill (drills/<id>.json).
type DrillSummary struct {
	ID              string    `json:"id"`
	Passed          bool      `json:"passed"`
	FinishedAt      time.Time `json:"finished_at"`
	AgeSeconds      float64   `json:"age_seconds"`
	Backup          string    `json:"backup"`
	Error           string    `json:"error,omitempty"`
	RecoverySeconds float64   `json:"recovery_seconds"`
}

// checkLastDrill: the last drill failed is critical; the last successful drill older
// than maxAge (or none while drills exist) is a warning; no drill at all is OK, said so.
func checkLastDrill(last, lastPassed *DrillSummary, now time.Time, maxAge time.Duration) Check {
	c := Check{Name: CheckLastDrill, Details: map[string]any{"last_drill": last, "last_successful_drill": lastPassed}}
	switch {
	case last == nil:
		c.Message = "no restore drill recorded (pgark drill tests that the backups restore)"
	case !last.Passed:
		c.Status = Critical
		c.Message = fmt.Sprintf("the last restore drill %s (backup %s) failed %s ago: %s", last.ID, last.Backup, roundAge(now.Sub(last.FinishedAt)), last.Error)
	case maxAge > 0 && now.Sub(lastPassed.FinishedAt) > maxAge:
		c.Status = Warning
		c.Message = fmt.Sprintf("the last successful restore drill %s is %s old (more than %s)", lastPassed.ID, roundAge(now.Sub(lastPassed.FinishedAt)), maxAge)
	default:
		c.Message = fmt.Sprintf("the last restore drill %s (backup %s) passed %s ago; recovery took %.1fs", last.ID, last.Backup, roundAge(now.Sub(last.FinishedAt)), last.RecoverySeconds)
	}
	return c
}

// drillMetrics writes the pgark_last_drill_* metrics.
func drillMetrics(p promWriter, r *Result) {
	if d := r.LastDrill; d != nil {
		ok := 0.0
		if d.Passed {
			ok = 1
		}
		p.family("pgark_last_drill_success", "gauge", "1 when the last restore drill (pgark drill) passed, 0 when it failed.", one(ok)...)
		p.family("pgark_last_drill_timestamp_seconds", "gauge", "When the last restore drill finished, in seconds since the epoch.", one(unixSeconds(d.FinishedAt))...)
	}
	if d := r.LastSuccessfulDrill; d != nil {
		p.family("pgark_last_successful_drill_timestamp_seconds", "gauge", "When the last successful restore drill finished, in seconds since the epoch.", one(unixSeconds(d.FinishedAt))...)
		p.family("pgark_last_successful_drill_recovery_seconds", "gauge", "Restore plus replay seconds of the last successful drill: the measured recovery time.", one(d.RecoverySeconds)...)
	}
}
