package main

import (
	"fmt"
	"io"
	"time"

	"github.com/pgark/pgark/walgap"
	"github.com/pgark/pgark/walinventory"
)

// failingGaps are the gaps that make verify fail: every gap, except the
// ones that wal-push dropped under archive-queue-max (recorded in gaps/)
// when a recoverable window exists (it then starts after them: the loss is
// known, recorded and behind the window, and goes with retention).
func failingGaps(gaps []walinventory.Gap, w *walinventory.Window) int {
	n := 0
	for _, g := range gaps {
		if g.Cause != walinventory.CauseDropped || w == nil {
			n++
		}
	}
	return n
}

// printDropped writes verify's lines about dropped WAL, the window that a
// gap cuts short, and the gap records that trusted-signers refuses.
func printDropped(w io.Writer, dropped []walgap.Range, before *walinventory.Window, unsigned []string) {
	for _, k := range unsigned {
		fmt.Fprintf(w, "  warning: gap record %s is not signed by a trusted signer: ignored, its segments count as missing\n", k)
	}
	for _, d := range dropped {
		at := ""
		if !d.LastDropped.IsZero() {
			at = ", last at " + d.LastDropped.UTC().Format(time.RFC3339)
		}
		fmt.Fprintf(w, "  DROPPED by archive-queue-max: %s (%d segments, timeline %d%s)\n", d.String(), d.Count, d.Timeline, at)
	}
	if before != nil {
		fmt.Fprintf(w, "recoverable window before the gap: from %s (backup %s, LSN %s) to LSN %s (end of %s, archived %s)\n",
			before.FromTime.UTC().Format(time.RFC3339), before.FromBackup, before.FromLSN,
			before.ToLSN, before.ToSegment, before.ToArchivedAt.UTC().Format(time.RFC3339))
	}
}
