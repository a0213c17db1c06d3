package health

import (
	"fmt"
	"time"

	"github.com/pgark/pgark/walinventory"
)

// CheckDropped reports WAL that wal-push dropped under archive-queue-max.
const CheckDropped = "dropped_wal"

// checkDropped is CRITICAL while a range of dropped segments has no backup
// started after it (point-in-time recovery cannot cross it: the window
// ends at the gap), and OK once one has, with the old gap named (it goes
// with the WAL it describes, by retention).
func checkDropped(rep *walinventory.Report) Check {
	c := Check{Name: CheckDropped}
	if len(rep.Dropped) == 0 {
		c.Message = "no WAL dropped by archive-queue-max"
		return c
	}
	open, covered := rep.DroppedAfter()
	c.Details = map[string]any{"dropped": rep.Dropped}
	if len(open) > 0 {
		c.Status = Critical
		last := open[len(open)-1]
		c.Message = fmt.Sprintf("WAL dropped by archive-queue-max (the repository was unreachable and pg_wal was full): %s lost", walinventory.DroppedString(open))
		if !last.LastDropped.IsZero() {
			c.Message += ", last dropped at " + last.LastDropped.UTC().Format(time.RFC3339)
		}
		if w := rep.WindowBeforeGap; w != nil {
			c.Message += fmt.Sprintf("; recovery reaches only the end of %s, before the gap", w.ToSegment)
		}
		c.Message += "; take a backup to start a new recoverable window"
		return c
	}
	c.Message = fmt.Sprintf("earlier WAL dropped by archive-queue-max: %s; a backup started after it, so the window is whole from that backup (the record goes with its WAL by retention)", walinventory.DroppedString(covered))
	return c
}
