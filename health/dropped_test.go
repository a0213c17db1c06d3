package health

import (
	"strings"
	"testing"
	"time"

	"github.com/pgark/pgark/walgap"
	"github.com/pgark/pgark/walinventory"
)

// TestCheckDropped: WAL dropped under archive-queue-max makes check
// CRITICAL, naming the exact range, while no backup started after it; the
// gap it explains is not also a continuity warning. A backup started after
// the gap makes it OK again, the old range still named.
func TestCheckDropped(t *testing.T) {
	lim := Limits{MaxArchiveLag: 16}
	in := healthy()
	in.Report.Gaps = []walinventory.Gap{{Timeline: 1, First: "000000010000000000000007", Last: "000000010000000000000008", Count: 2}}
	in.Report.Window = nil
	in.Report.AddDropped([]walgap.Range{
		{Timeline: 1, First: "000000010000000000000007", Last: "000000010000000000000007", Count: 1},
		{Timeline: 1, First: "000000010000000000000008", Last: "000000010000000000000008", Count: 1, LastDropped: in.Now.Add(-time.Minute)},
	})
	if in.Report.Gaps[0].Cause != walinventory.CauseDropped {
		t.Fatalf("gap cause %q", in.Report.Gaps[0].Cause)
	}
	r := Evaluate(in, lim)
	st := statuses(r)
	msg := message(r, CheckDropped)
	if r.Status != Critical || st[CheckDropped] != Critical || !strings.Contains(msg, "000000010000000000000007..000000010000000000000008 (2 segments)") {
		t.Fatalf("dropped, no backup after: %v %s\n%s", st, msg, r.Summary())
	}
	if st[CheckContinuity] != OK {
		t.Fatalf("a dropped gap is also a continuity warning: %s", message(r, CheckContinuity))
	}
	if len(r.DroppedWAL) != 1 || r.DroppedWAL[0].Count != 2 {
		t.Fatalf("dropped_wal %+v", r.DroppedWAL)
	}

	// A backup that started after the gap.
	b := meta("20261124T153000Z", "0/9000100", in.Now.Add(-10*time.Minute))
	in.Report.Backups = append(in.Report.Backups, b)
	in.Report.Window = &walinventory.Window{FromBackup: b.ID, FromTime: b.StopTime, FromLSN: b.EndLSN, ToSegment: "00000001000000000000000B", ToArchivedAt: in.Now}
	r = Evaluate(in, lim)
	st = statuses(r)
	if st[CheckDropped] != OK || r.Status != OK || !strings.Contains(message(r, CheckDropped), "000000010000000000000007..000000010000000000000008") {
		t.Fatalf("after a new backup: %v %s", st, r.Summary())
	}

	// A gap only partly explained by drops stays a continuity warning.
	in = healthy()
	in.Report.Gaps = []walinventory.Gap{{Timeline: 1, First: "000000010000000000000007", Last: "000000010000000000000009", Count: 3}}
	in.Report.AddDropped([]walgap.Range{{Timeline: 1, First: "000000010000000000000008", Last: "000000010000000000000008", Count: 1}})
	if in.Report.Gaps[0].Cause != walinventory.CausePartlyDropped {
		t.Fatalf("partly: cause %q", in.Report.Gaps[0].Cause)
	}
	if st := statuses(Evaluate(in, lim)); st[CheckContinuity] != Warning || st[CheckDropped] != Critical {
		t.Fatalf("partly dropped: %v", st)
	}
}
