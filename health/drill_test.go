package health

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func TestCheckLastDrill(t *testing.T) {
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	passed := &DrillSummary{ID: "20261206T120000Z", Passed: true, FinishedAt: now.Add(-24 * time.Hour), Backup: "20261205T000000Z", RecoverySeconds: 12.5}
	old := &DrillSummary{ID: "20261120T120000Z", Passed: true, FinishedAt: now.Add(-17 * 24 * time.Hour), Backup: "b"}
	failed := &DrillSummary{ID: "20261207T110000Z", Passed: false, FinishedAt: now.Add(-time.Hour), Backup: "b", Error: "segment 000000010000000000000007 is missing"}
	for _, tc := range []struct {
		name             string
		last, lastPassed *DrillSummary
		want             Status
		msg              string
	}{
		{"none", nil, nil, OK, "no restore drill recorded"},
		{"passed", passed, passed, OK, "passed 24h0m0s ago; recovery took 12.5s"},
		{"too old", old, old, Warning, "is 408h0m0s old (more than 192h0m0s)"},
		{"failed", failed, passed, Critical, "failed 1h0m0s ago: segment 000000010000000000000007 is missing"},
		{"failed, never passed", failed, nil, Critical, "failed"},
	} {
		c := checkLastDrill(tc.last, tc.lastPassed, now, 8*24*time.Hour)
		if c.Status != tc.want || !strings.Contains(c.Message, tc.msg) {
			t.Errorf("%s: %v %q, want %v containing %q", tc.name, c.Status, c.Message, tc.want, tc.msg)
		}
	}
	if c := checkLastDrill(old, old, now, 0); c.Status != OK {
		t.Errorf("max age 0 must not check the age: %v", c.Status)
	}
}

func TestLastDrillInReportAndMetrics(t *testing.T) {
	in := healthy()
	in.LastDrill = &DrillSummary{ID: "20261124T150000Z", Passed: false, FinishedAt: in.Now.Add(-time.Minute), Error: "x"}
	r := Evaluate(in, Limits{MaxArchiveLag: 16, MaxDrillAge: time.Hour})
	if r.Status != Critical || r.LastDrill == nil || r.LastDrill.AgeSeconds != 60 {
		t.Fatalf("status %v, last drill %+v", r.Status, r.LastDrill)
	}
	var buf bytes.Buffer
	if err := WritePrometheus(&buf, r); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`pgark_check_result{check="last_drill"} 2`, "pgark_last_drill_success 0", "pgark_last_drill_timestamp_seconds "} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("metrics lack %q:\n%s", want, buf.String())
		}
	}
}
